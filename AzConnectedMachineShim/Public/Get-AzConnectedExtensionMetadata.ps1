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
    .PARAMETER DefaultProfile
        Accepted and ignored, as in Az (where it is not functional either); the shim's connection comes from Connect-Arcext or ARCEXT_* variables. Aliases: AzureRMContext, AzureCredential.
    .PARAMETER Break
        Accepted and ignored (Az waits for a .NET debugger).
    .PARAMETER HttpPipelineAppend
        Accepted and ignored (Az's SendAsync pipeline steps have no equivalent here).
    .PARAMETER HttpPipelinePrepend
        Accepted and ignored (Az's SendAsync pipeline steps have no equivalent here).
    .PARAMETER Proxy
        The URI of a proxy server for the requests to the arcext endpoint.
    .PARAMETER ProxyCredential
        Credentials for the -Proxy server.
    .PARAMETER ProxyUseDefaultCredentials
        Use the current user's credentials for the -Proxy server.
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
        [string] $ExtensionType,

        [Parameter(Mandatory)]
        [string] $Location,

        [Parameter(Mandatory)]
        [string] $Publisher,

        [Parameter()]
        [string[]] $SubscriptionId,

        [Parameter(Mandatory, ParameterSetName = 'Get')]
        [string] $Version,

        [Parameter()]
        [Alias('AzureRMContext', 'AzureCredential')]
        [psobject] $DefaultProfile,

        [Parameter(DontShow)]
        [switch] $Break,

        [Parameter(DontShow)]
        [object[]] $HttpPipelineAppend,

        [Parameter(DontShow)]
        [object[]] $HttpPipelinePrepend,

        [Parameter(DontShow)]
        [uri] $Proxy,

        [Parameter(DontShow)]
        [pscredential] $ProxyCredential,

        [Parameter(DontShow)]
        [switch] $ProxyUseDefaultCredentials
    )

    process {
        $proxy = Get-ArcProxySetting -BoundParameters $PSBoundParameters
        foreach ($subscription in (Resolve-ArcSubscriptionId -SubscriptionId $SubscriptionId)) {
            try {
                $values = @{ subscriptionId = $subscription; location = $Location; publisher = $Publisher; extensionType = $ExtensionType; version = $Version }
                if ($PSCmdlet.ParameterSetName -eq 'Get') {
                    $response = Invoke-ArcRequest -ProxySetting $proxy -Method GET -Path (Resolve-ArcPath -Route ExtensionMetadataVersion -Values $values)
                    $response.Body | ConvertTo-ArcExtensionValue
                }
                else {
                    Get-ArcPagedResult -ProxySetting $proxy -Path (Resolve-ArcPath -Route ExtensionMetadataVersions -Values $values) | ConvertTo-ArcExtensionValue
                }
            }
            catch {
                $PSCmdlet.WriteError($_)
            }
        }
    }
}
