function Get-AzConnectedExtensionMetadata {
    <#
    .SYNOPSIS
        Gets the published versions of an extension type in a region, or one version.
    .DESCRIPTION
        Same parameter sets as Az.ConnectedMachine: List (default) and Get (-Version). On arcext, a version
        appears here once it has been published to the catalog; the upgrade engine then acts on it.
    .PARAMETER Location
        The Azure region, for example eastus.
    .PARAMETER Publisher
        The extension publisher, for example Microsoft.Azure.Monitor.
    .PARAMETER ExtensionType
        The extension type, for example AzureMonitorWindowsAgent.
    .PARAMETER Version
        One version to get.
    .PARAMETER SubscriptionId
        One or more subscription ids. Defaults to the connection's subscription.
    .EXAMPLE
        PS C:\> Get-AzConnectedExtensionMetadata -Location eastus -Publisher Microsoft.Azure.NetworkWatcher -ExtensionType NetworkWatcherAgentWindows

        Lists every published version of the Network Watcher agent.
    .EXAMPLE
        PS C:\> Get-AzConnectedExtensionMetadata -Location eastus -Publisher Microsoft.Azure.Monitor -ExtensionType AzureMonitorWindowsAgent | Sort-Object { [version]$_.Version } | Select-Object -Last 1

        Gets the newest published version of the Azure Monitor agent.
    .INPUTS
        None.
    .OUTPUTS
        AzConnectedMachineShim.ExtensionValue
    .LINK
        Update-AzConnectedExtension
    #>
    [CmdletBinding(DefaultParameterSetName = 'List', PositionalBinding = $false)]
    [OutputType('AzConnectedMachineShim.ExtensionValue')]
    param(
        [Parameter(Mandatory)]
        [string] $Location,

        [Parameter(Mandatory)]
        [string] $Publisher,

        [Parameter(Mandatory)]
        [string] $ExtensionType,

        [Parameter(Mandatory, ParameterSetName = 'Get')]
        [string] $Version,

        [Parameter()]
        [string[]] $SubscriptionId
    )

    process {
        foreach ($subscription in (Resolve-ArcSubscriptionId -SubscriptionId $SubscriptionId)) {
            try {
                $values = @{ subscriptionId = $subscription; location = $Location; publisher = $Publisher; extensionType = $ExtensionType; version = $Version }
                if ($PSCmdlet.ParameterSetName -eq 'Get') {
                    $response = Invoke-ArcRequest -Method GET -Path (Resolve-ArcPath -Route ExtensionMetadataVersion -Values $values)
                    $response.Body | ConvertTo-ArcExtensionValue
                }
                else {
                    Get-ArcPagedResult -Path (Resolve-ArcPath -Route ExtensionMetadataVersions -Values $values) | ConvertTo-ArcExtensionValue
                }
            }
            catch {
                $PSCmdlet.WriteError($_)
            }
        }
    }
}
