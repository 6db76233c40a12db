function Get-AzConnectedMachine {
    <#
    .SYNOPSIS
        Gets Azure Arc-enabled machines: one by name, those of a resource group, or those of a subscription.
    .DESCRIPTION
        Same parameter sets as Az.ConnectedMachine: List1 (default, the whole subscription), List
        (-ResourceGroupName) and Get (-Name, alias -MachineName, with -ResourceGroupName). Lists follow nextLink.
    .PARAMETER Name
        The name of the machine. Alias: MachineName.
    .PARAMETER ResourceGroupName
        The name of the resource group.
    .PARAMETER SubscriptionId
        One or more subscription ids. Defaults to the connection's subscription.
    .PARAMETER Expand
        Sent as $expand, for example instanceView.
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
        PS C:\> Get-AzConnectedMachine

        Lists the machines of the default subscription.
    .EXAMPLE
        PS C:\> Get-AzConnectedMachine -ResourceGroupName contoso-rg -Name web01

        Gets one machine.
    .EXAMPLE
        PS C:\> Get-AzConnectedMachine -ResourceGroupName contoso-rg | ForEach-Object { Get-AzConnectedMachineExtension -ResourceGroupName $_.ResourceGroupName -MachineName $_.Name }

        Lists the extensions of every machine of a resource group.
    .INPUTS
        None.
    .OUTPUTS
        AzConnectedMachineShim.Machine
    .LINK
        Get-AzConnectedMachineExtension
    #>
    [CmdletBinding(DefaultParameterSetName = 'List1', PositionalBinding = $false)]
    [OutputType('AzConnectedMachineShim.Machine')]
    param(
        [Parameter(Mandatory, ParameterSetName = 'Get')]
        [Alias('MachineName')]
        [string] $Name,

        [Parameter(Mandatory, ParameterSetName = 'Get')]
        [Parameter(Mandatory, ParameterSetName = 'List')]
        [string] $ResourceGroupName,

        [Parameter()]
        [string[]] $SubscriptionId,

        [Parameter(ParameterSetName = 'Get')]
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
                $values = @{ subscriptionId = $subscription; resourceGroupName = $ResourceGroupName; machineName = $Name }
                $query = [ordered]@{ '$expand' = $Expand }
                switch ($PSCmdlet.ParameterSetName) {
                    'Get' {
                        $response = Invoke-ArcRequest -ProxySetting $proxy -Method GET -Path (Resolve-ArcPath -Route Machine -Values $values) -Query $query
                        $response.Body | ConvertTo-ArcMachine
                    }
                    'List' {
                        Get-ArcPagedResult -ProxySetting $proxy -Path (Resolve-ArcPath -Route MachinesByResourceGroup -Values $values) -Query $query | ConvertTo-ArcMachine
                    }
                    default {
                        Get-ArcPagedResult -ProxySetting $proxy -Path (Resolve-ArcPath -Route MachinesBySubscription -Values $values) | ConvertTo-ArcMachine
                    }
                }
            }
            catch {
                $PSCmdlet.WriteError($_)
            }
        }
    }
}
