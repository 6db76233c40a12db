function Get-ArcErrorCategory {
    <#
    .SYNOPSIS
        Maps an HTTP status code to the ErrorCategory of the ErrorRecord the module reports.
    .DESCRIPTION
        400/422 InvalidArgument, 401/403 PermissionDenied, 404 ObjectNotFound, 409 ResourceExists,
        408 OperationTimeout, 429 LimitsExceeded, any other 4xx InvalidOperation, 5xx ConnectionError.
    .EXAMPLE
        Get-ArcErrorCategory -StatusCode 404    # ObjectNotFound
    #>
    [CmdletBinding()]
    [OutputType([System.Management.Automation.ErrorCategory])]
    param(
        [Parameter(Mandatory)]
        [int] $StatusCode
    )

    switch ($StatusCode) {
        { $_ -in 400, 422 } { return [System.Management.Automation.ErrorCategory]::InvalidArgument }
        { $_ -in 401, 403 } { return [System.Management.Automation.ErrorCategory]::PermissionDenied }
        404 { return [System.Management.Automation.ErrorCategory]::ObjectNotFound }
        409 { return [System.Management.Automation.ErrorCategory]::ResourceExists }
        408 { return [System.Management.Automation.ErrorCategory]::OperationTimeout }
        429 { return [System.Management.Automation.ErrorCategory]::LimitsExceeded }
        { $_ -ge 500 } { return [System.Management.Automation.ErrorCategory]::ConnectionError }
        default { return [System.Management.Automation.ErrorCategory]::InvalidOperation }
    }
}
