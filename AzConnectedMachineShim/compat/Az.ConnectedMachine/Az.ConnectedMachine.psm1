# Root module of the optional Az.ConnectedMachine compatibility module (see Az.ConnectedMachine.psd1).
# AzConnectedMachineShim is its nested module; this file adds Set-AzContext / Get-AzContext only when Az.Accounts
# is not installed, so 'Set-AzContext -Subscription <id>' at the top of a script sets the subscription the shim
# uses. With Az.Accounts installed, its own Get-AzContext is used and these are not defined.

$script:AzContextSubscription = $null

$exports = @(
    'Get-AzConnectedExtensionMetadata', 'Get-AzConnectedMachine', 'Get-AzConnectedMachineExtension',
    'New-AzConnectedMachineExtension', 'Remove-AzConnectedMachineExtension', 'Set-AzConnectedMachineExtension',
    'Update-AzConnectedExtension', 'Update-AzConnectedMachineExtension', 'Connect-Arcext', 'Disconnect-Arcext',
    'Get-ArcextExtensionUpgradeHistory'
)

if (-not (Get-Module -ListAvailable -Name 'Az.Accounts')) {
    function Set-AzContext {
        <#
        .SYNOPSIS
            arcext stand-in for Az.Accounts' Set-AzContext: sets the subscription the shim's cmdlets use.
        .DESCRIPTION
            -Subscription takes an id or a name; names come from ARCEXT_SUBSCRIPTION_NAMES (a JSON object
            {"name": "id"}, the same variable the arcext CLI reads). Nothing is sent anywhere.
        .PARAMETER Subscription
            The subscription id or name. Aliases: SubscriptionId, SubscriptionName.
        .PARAMETER Tenant
            Accepted and ignored.
        .PARAMETER Name
            Accepted and ignored (the context name).
        .PARAMETER DefaultProfile
            Accepted and ignored.
        .PARAMETER Force
            Accepted and ignored.
        .EXAMPLE
            Set-AzContext -Subscription 00000000-0000-0000-0000-000000000000
        .EXAMPLE
            Set-AzContext -Subscription 'Contoso Dev'
        #>
        [CmdletBinding()]
        [OutputType([pscustomobject])]
        param(
            [Parameter(Position = 0)]
            [Alias('SubscriptionId', 'SubscriptionName')]
            [string] $Subscription,

            [Parameter()]
            [Alias('TenantId', 'TenantName', 'Domain')]
            [string] $Tenant,

            [Parameter()]
            [string] $Name,

            [Parameter()]
            [Alias('AzContext', 'AzureRmContext', 'AzureCredential')]
            [psobject] $DefaultProfile,

            [Parameter()]
            [switch] $Force
        )

        $id = $Subscription
        if ($id -and $id -notmatch '^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$' -and $env:ARCEXT_SUBSCRIPTION_NAMES) {
            $names = ConvertFrom-Json -InputObject $env:ARCEXT_SUBSCRIPTION_NAMES -AsHashtable -ErrorAction Stop
            foreach ($key in $names.Keys) {
                if ([string]$key -eq $id) { $id = [string]$names[$key]; break }
            }
        }
        $script:AzContextSubscription = [pscustomobject]@{ Id = $id; Name = $Subscription }
        Get-AzContext
    }

    function Get-AzContext {
        <#
        .SYNOPSIS
            arcext stand-in for Az.Accounts' Get-AzContext: the subscription Set-AzContext chose, or nothing.
        .DESCRIPTION
            Returns an object with Name and Subscription (Id, Name), the parts of an Az context that scripts and
            the shim read; $null before Set-AzContext.
        .PARAMETER DefaultProfile
            Accepted and ignored.
        .EXAMPLE
            (Get-AzContext).Subscription.Id
        .EXAMPLE
            if (-not (Get-AzContext)) { Set-AzContext -Subscription $id }
        #>
        [CmdletBinding()]
        [OutputType([pscustomobject])]
        param(
            [Parameter()]
            [Alias('AzContext', 'AzureRmContext', 'AzureCredential')]
            [psobject] $DefaultProfile
        )

        if ($null -eq $script:AzContextSubscription) {
            return $null
        }
        [pscustomobject]@{
            Name         = "arcext ($($script:AzContextSubscription.Id))"
            Subscription = $script:AzContextSubscription
            Account      = $null
            Tenant       = $null
            Environment  = 'arcext'
        }
    }

    $exports += @('Set-AzContext', 'Get-AzContext')
}

Export-ModuleMember -Function $exports -Alias @(
    'Connect-AzConnectedMachineShim', 'Disconnect-AzConnectedMachineShim', 'Get-AzConnectedMachineExtensionUpgradeHistory'
)
