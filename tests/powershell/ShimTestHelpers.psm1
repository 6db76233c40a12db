# Helpers for the AzConnectedMachineShim Pester tests: replay of real Azure traffic recorded by the
# Az.ConnectedMachine tests (fixtures/az-recordings, trimmed copies; see fixtures/vendor_recordings.py).

$script:RecordingDirectory = Join-Path $PSScriptRoot 'fixtures/az-recordings'
$script:Exchanges = [System.Collections.Generic.Queue[object]]::new()
$script:Requests = [System.Collections.Generic.List[object]]::new()

function Get-AzRecording {
    <#
    .SYNOPSIS
        Returns the entries of one recording file, in recorded order.
    .EXAMPLE
        Get-AzRecording -Name New-AzConnectedMachineExtension
    #>
    [CmdletBinding()]
    [OutputType([pscustomobject])]
    param(
        [Parameter(Mandatory)]
        [string] $Name
    )

    $path = Join-Path $script:RecordingDirectory "$Name.Recording.json"
    # Without -AsHashtable the properties keep the file's order (the order of the exchanges).
    $data = Get-Content -LiteralPath $path -Raw | ConvertFrom-Json
    foreach ($property in $data.PSObject.Properties) {
        $entry = $property.Value
        $headers = @{}
        foreach ($header in $entry.Response.Headers.PSObject.Properties) {
            $headers[$header.Name] = @($header.Value) -join ', '
        }
        [pscustomobject]@{
            Key         = $property.Name
            Method      = $entry.Request.Method
            Uri         = $entry.Request.RequestUri
            Path        = ([uri]$entry.Request.RequestUri).AbsolutePath
            RequestBody = $entry.Request.Content
            StatusCode  = [int]$entry.Response.StatusCode
            Headers     = $headers
            Content     = $entry.Response.Content
        }
    }
}

function ConvertTo-WebResponse {
    <#
    .SYNOPSIS
        Shapes a recorded exchange like the object Invoke-WebRequest returns (StatusCode, Headers, Content).
    .EXAMPLE
        Get-AzRecording -Name Get-AzConnectedMachineExtension | Select-Object -First 1 | ConvertTo-WebResponse
    #>
    [CmdletBinding()]
    [OutputType([pscustomobject])]
    param(
        [Parameter(Mandatory, ValueFromPipeline)]
        [pscustomobject] $Entry
    )

    process {
        $headers = [System.Collections.Generic.Dictionary[string, string[]]]::new([System.StringComparer]::OrdinalIgnoreCase)
        foreach ($name in $Entry.Headers.Keys) {
            $headers[$name] = [string[]]@($Entry.Headers[$name])
        }
        [pscustomobject]@{
            StatusCode = $Entry.StatusCode
            Headers    = $headers
            Content    = if ($null -eq $Entry.Content) { '' } else { [string]$Entry.Content }
        }
    }
}

function ConvertTo-ArcResponse {
    <#
    .SYNOPSIS
        Shapes a recorded exchange like the object the module's Invoke-ArcRequest returns.
    .EXAMPLE
        Get-AzRecording -Name Get-AzConnectedMachineExtension | Select-Object -First 1 | ConvertTo-ArcResponse
    #>
    [CmdletBinding()]
    [OutputType([pscustomobject])]
    param(
        [Parameter(Mandatory, ValueFromPipeline)]
        [pscustomobject] $Entry
    )

    process {
        [pscustomobject]@{
            StatusCode = $Entry.StatusCode
            Headers    = $Entry.Headers
            Body       = if ([string]::IsNullOrEmpty($Entry.Content)) { $null } else { ConvertFrom-Json -InputObject $Entry.Content -AsHashtable -NoEnumerate }
            Uri        = $Entry.Uri
        }
    }
}

function Set-RecordedExchange {
    <#
    .SYNOPSIS
        Queues the exchanges the mocked Invoke-WebRequest replays, in order, and clears the request log.
    .EXAMPLE
        Set-RecordedExchange -Entry (Get-AzRecording -Name New-AzConnectedMachineExtension)
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)]
        [AllowEmptyCollection()]
        [object[]] $Entry
    )

    $script:Exchanges.Clear()
    $script:Requests.Clear()
    foreach ($item in $Entry) {
        $script:Exchanges.Enqueue($item)
    }
}

function Invoke-RecordedExchange {
    <#
    .SYNOPSIS
        Body of the Invoke-WebRequest mock: checks the request against the next recorded exchange and returns its response.
    .DESCRIPTION
        The method and the URL path must be the recorded ones (the api-version may differ: the recordings
        used preview versions). Every request is logged for Get-RecordedRequest.
    .EXAMPLE
        Mock -ModuleName AzConnectedMachineShim Invoke-WebRequest { Invoke-RecordedExchange -Method $Method -Uri $Uri -Body $Body -Headers $Headers }
    #>
    [CmdletBinding()]
    [OutputType([pscustomobject])]
    param(
        [Parameter(Mandatory)]
        [string] $Method,

        [Parameter(Mandatory)]
        [uri] $Uri,

        [AllowNull()]
        [object] $Body,

        [AllowNull()]
        [System.Collections.IDictionary] $Headers
    )

    $script:Requests.Add([pscustomobject]@{ Method = $Method.ToUpperInvariant(); Uri = $Uri; Body = $Body; Headers = $Headers })
    if ($script:Exchanges.Count -eq 0) {
        throw "Unexpected request $Method $($Uri): no recorded exchange left."
    }
    $entry = $script:Exchanges.Dequeue()
    if ($Method -ne $entry.Method -or $Uri.AbsolutePath -ne $entry.Path) {
        throw "Unexpected request $Method $($Uri.AbsolutePath); the recording has $($entry.Method) $($entry.Path)."
    }
    $entry | ConvertTo-WebResponse
}

function Get-RecordedRequest {
    <#
    .SYNOPSIS
        Returns the requests the mocked Invoke-WebRequest received, in order.
    .EXAMPLE
        (Get-RecordedRequest)[0].Uri
    #>
    [CmdletBinding()]
    [OutputType([pscustomobject])]
    param()

    $script:Requests.ToArray()
}

function Get-RemainingExchangeCount {
    <#
    .SYNOPSIS
        How many queued exchanges were not replayed.
    .EXAMPLE
        Get-RemainingExchangeCount | Should -Be 0
    #>
    [CmdletBinding()]
    [OutputType([int])]
    param()

    $script:Exchanges.Count
}

function ConvertTo-CanonicalJson {
    <#
    .SYNOPSIS
        Re-serialises JSON text compactly, so two bodies compare equal when they hold the same document in the same order.
    .EXAMPLE
        ConvertTo-CanonicalJson -Json $recorded.RequestBody
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param(
        [Parameter(Mandatory)]
        [string] $Json
    )

    ConvertFrom-Json -InputObject $Json -NoEnumerate | ConvertTo-Json -Depth 100 -Compress
}

Export-ModuleMember -Function *
