function Get-ArcAzContextSubscription {
    <#
    .SYNOPSIS
        The subscription id of the current Az context, or $null when there is no Get-AzContext or no context.
    .DESCRIPTION
        Scripts written for Az.ConnectedMachine take their subscription from Set-AzContext. When a Get-AzContext
        command is available (Az.Accounts, or the Set-AzContext/Get-AzContext of the optional
        Az.ConnectedMachine compatibility module) and its context names a subscription, the shim uses it as
        the default subscription. Nothing is sent to Azure: only the id is read.
    .EXAMPLE
        $subscription = Get-ArcAzContextSubscription
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param()

    $command = Get-Command -Name 'Get-AzContext' -CommandType @('Function', 'Cmdlet') -ErrorAction Ignore | Select-Object -First 1
    if (-not $command) {
        return $null
    }
    try {
        $context = & $command -ErrorAction Stop
    }
    catch {
        Write-Verbose "Get-AzContext failed: $($_.Exception.Message)"
        return $null
    }
    $id = if ($context -and $context.Subscription) { [string]$context.Subscription.Id } else { $null }
    if ([string]::IsNullOrWhiteSpace($id)) { $null } else { $id }
}
