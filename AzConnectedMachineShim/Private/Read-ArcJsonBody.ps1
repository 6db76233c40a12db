function Read-ArcJsonBody {
    <#
    .SYNOPSIS
        Returns the request body given with -JsonString or -JsonFilePath, after checking that it is JSON.
    .DESCRIPTION
        The *ViaJsonString and *ViaJsonFilePath parameter sets send the document as it is; a file that does
        not exist or text that is not JSON is an InvalidArgument error before any request is made.
    .EXAMPLE
        $body = Read-ArcJsonBody -JsonFilePath ./extension.json
    #>
    [CmdletBinding(DefaultParameterSetName = 'String')]
    [OutputType([string])]
    param(
        [Parameter(Mandatory, ParameterSetName = 'String')]
        [AllowEmptyString()]
        [string] $JsonString,

        [Parameter(Mandatory, ParameterSetName = 'File')]
        [string] $JsonFilePath
    )

    if ($PSCmdlet.ParameterSetName -eq 'File') {
        if (-not (Test-Path -LiteralPath $JsonFilePath -PathType Leaf)) {
            $PSCmdlet.ThrowTerminatingError((New-ArcErrorRecord -Message "JSON file '$JsonFilePath' not found." `
                        -ErrorId 'JsonFileNotFound' -Category ObjectNotFound -TargetObject $JsonFilePath))
        }
        $JsonString = Get-Content -LiteralPath $JsonFilePath -Raw
    }
    try {
        $null = ConvertFrom-Json -InputObject $JsonString -ErrorAction Stop
    }
    catch {
        $PSCmdlet.ThrowTerminatingError((New-ArcErrorRecord -Message "The request body is not valid JSON: $($_.Exception.Message)" `
                    -ErrorId 'InvalidJsonBody' -Category InvalidArgument -TargetObject $JsonString -InnerException $_.Exception))
    }
    $JsonString
}
