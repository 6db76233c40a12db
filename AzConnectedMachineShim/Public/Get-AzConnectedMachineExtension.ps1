function Get-AzConnectedMachineExtension {
    <#
    .SYNOPSIS
        Gets the extensions of an Azure Arc-enabled machine, or one extension by name.
    .DESCRIPTION
        Same parameter sets as Az.ConnectedMachine: List (default) and Get (-Name). The output objects carry
        Az's property names (Name, EnableAutomaticUpgrade, TypeHandlerVersion, ProvisioningState, ...) and
        Id, so they can be piped to Update-AzConnectedMachineExtension and Remove-AzConnectedMachineExtension.
        Protected settings are never returned.
    .PARAMETER Name
        The name of the extension.
    .PARAMETER MachineName
        The name of the machine.
    .PARAMETER ResourceGroupName
        The name of the resource group. As in Az, -ResourceGroup works as an unambiguous prefix.
    .PARAMETER SubscriptionId
        One or more subscription ids. Defaults to the connection's subscription.
    .PARAMETER Expand
        Sent as $expand on the list request.
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
        PS C:\> Get-AzConnectedMachineExtension -ResourceGroup resourceGroupName -MachineName machineName | Format-Table Name, EnableAutomaticUpgrade

        Shows whether automatic upgrade is enabled for every extension of a machine (Arc documentation).
    .EXAMPLE
        PS C:\> Get-AzConnectedMachineExtension -ResourceGroupName contoso-rg -MachineName web01 -Name AzureMonitorWindowsAgent | Format-List

        Gets one extension with all its properties.
    .INPUTS
        None.
    .OUTPUTS
        AzConnectedMachineShim.MachineExtension
    .LINK
        Update-AzConnectedMachineExtension
    #>
    [CmdletBinding(DefaultParameterSetName = 'List', PositionalBinding = $false)]
    [OutputType('AzConnectedMachineShim.MachineExtension')]
    param(
        [Parameter(Mandatory)]
        [string] $MachineName,

        [Parameter(Mandatory)]
        [string] $ResourceGroupName,

        [Parameter(Mandatory, ParameterSetName = 'Get')]
        [string] $Name,

        [Parameter()]
        [string[]] $SubscriptionId,

        [Parameter(ParameterSetName = 'List')]
        [string] $Expand,

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
                $values = @{ subscriptionId = $subscription; resourceGroupName = $ResourceGroupName; machineName = $MachineName; extensionName = $Name }
                if ($PSCmdlet.ParameterSetName -eq 'Get') {
                    $response = Invoke-ArcRequest -ProxySetting $proxy -Method GET -Path (Resolve-ArcPath -Route MachineExtension -Values $values)
                    $response.Body | ConvertTo-ArcMachineExtension
                }
                else {
                    Get-ArcPagedResult -ProxySetting $proxy -Path (Resolve-ArcPath -Route MachineExtensions -Values $values) -Query ([ordered]@{ '$expand' = $Expand }) |
                        ConvertTo-ArcMachineExtension
                }
            }
            catch {
                $PSCmdlet.WriteError($_)
            }
        }
    }
}
