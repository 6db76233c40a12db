function New-ArcErrorRecord {
    <#
    .SYNOPSIS
        Creates the ErrorRecord the module reports for a failed request or a bad argument.
    .DESCRIPTION
        HTTP failures carry a System.Net.Http.HttpRequestException with the status code, and the ARM error
        code as ErrorId (for example ResourceNotFound), so scripts can test $_.FullyQualifiedErrorId,
        $_.CategoryInfo.Category or $_.Exception.StatusCode. Other failures get an exception that fits the
        category. The ARM error code and target are also stored in Exception.Data.
    .EXAMPLE
        New-ArcErrorRecord -Message 'Not found' -ErrorId ResourceNotFound -Category ObjectNotFound -StatusCode 404 -TargetObject $uri
    #>
    [CmdletBinding()]
    [OutputType([System.Management.Automation.ErrorRecord])]
    param(
        [Parameter(Mandatory)]
        [string] $Message,

        [Parameter(Mandatory)]
        [string] $ErrorId,

        [Parameter(Mandatory)]
        [System.Management.Automation.ErrorCategory] $Category,

        [AllowNull()]
        [object] $TargetObject,

        [int] $StatusCode,

        [AllowNull()]
        [System.Exception] $InnerException,

        [string] $RecommendedAction
    )

    $exception = if ($StatusCode -gt 0) {
        [System.Net.Http.HttpRequestException]::new($Message, $InnerException, [System.Net.HttpStatusCode]$StatusCode)
    }
    else {
        switch ($Category) {
            'InvalidArgument' { [System.ArgumentException]::new($Message, $InnerException) }
            'OperationTimeout' { [System.TimeoutException]::new($Message, $InnerException) }
            'ConnectionError' { [System.Net.Http.HttpRequestException]::new($Message, $InnerException) }
            'PermissionDenied' { [System.UnauthorizedAccessException]::new($Message, $InnerException) }
            'AuthenticationError' { [System.UnauthorizedAccessException]::new($Message, $InnerException) }
            default { [System.InvalidOperationException]::new($Message, $InnerException) }
        }
    }
    $exception.Data['ArmErrorCode'] = $ErrorId
    if ($null -ne $TargetObject) {
        $exception.Data['Target'] = [string]$TargetObject
    }

    $record = [System.Management.Automation.ErrorRecord]::new($exception, $ErrorId, $Category, $TargetObject)
    $record.ErrorDetails = [System.Management.Automation.ErrorDetails]::new($Message)
    if ($RecommendedAction) {
        $record.ErrorDetails.RecommendedAction = $RecommendedAction
    }
    $record
}
