function Remove-AzConnectedMachineExtension {
    <#
    .SYNOPSIS
        Removes an extension from an Azure Arc-enabled machine (DELETE), and waits for the operation to finish.
    .DESCRIPTION
        Same parameter sets as Az.ConnectedMachine: Delete (default), DeleteViaIdentityMachine (a machine
        piped in, with -Name) and DeleteViaIdentity (an extension piped in from Get-AzConnectedMachineExtension).
        Writes nothing unless -PassThru, which writes $true once the extension is gone (or, with -NoWait, once
        the server accepted the request).
    .PARAMETER Name
        The name of the extension.
    .PARAMETER MachineName
        The name of the machine.
    .PARAMETER ResourceGroupName
        The name of the resource group.
    .PARAMETER SubscriptionId
        The subscription id. Defaults to the connection's subscription.
    .PARAMETER InputObject
        An extension from Get-AzConnectedMachineExtension (taken from the pipeline).
    .PARAMETER MachineInputObject
        A machine from Get-AzConnectedMachine (taken from the pipeline); -Name names the extension on it.
    .PARAMETER AsJob
        Run the command as a job and return the job.
    .PARAMETER NoWait
        Return as soon as the server accepted the request, without waiting for the operation.
    .PARAMETER PassThru
        Write $true when the command succeeds.
    .PARAMETER WhatIf
        Show what would happen without sending the request.
    .PARAMETER Confirm
        Ask for confirmation before sending the request.
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
        PS C:\> Remove-AzConnectedMachineExtension -ResourceGroupName contoso-rg -MachineName web01 -Name custom -PassThru

        Removes one extension and writes True.
    .EXAMPLE
        PS C:\> Get-AzConnectedMachineExtension -ResourceGroupName contoso-rg -MachineName web01 | Where-Object ProvisioningState -eq 'Failed' | Remove-AzConnectedMachineExtension -Confirm:$false

        Removes every failed extension of a machine without prompting.
    .INPUTS
        AzConnectedMachineShim.MachineExtension
        AzConnectedMachineShim.Machine
    .OUTPUTS
        System.Boolean, with -PassThru.
    .LINK
        New-AzConnectedMachineExtension
    #>
    [CmdletBinding(DefaultParameterSetName = 'Delete', PositionalBinding = $false, SupportsShouldProcess, ConfirmImpact = 'Medium')]
    [OutputType([bool])]
    param(
        [Parameter(Mandatory, ParameterSetName = 'Delete')]
        [string] $MachineName,

        [Parameter(Mandatory, ParameterSetName = 'Delete')]
        [Parameter(Mandatory, ParameterSetName = 'DeleteViaIdentityMachine')]
        [string] $Name,

        [Parameter(Mandatory, ParameterSetName = 'Delete')]
        [string] $ResourceGroupName,

        [Parameter(ParameterSetName = 'Delete')]
        [string] $SubscriptionId,

        [Parameter(Mandatory, ParameterSetName = 'DeleteViaIdentity', ValueFromPipeline)]
        [object] $InputObject,

        [Parameter(Mandatory, ParameterSetName = 'DeleteViaIdentityMachine', ValueFromPipeline)]
        [object] $MachineInputObject,

        [Parameter()]
        [Alias('AzureRMContext', 'AzureCredential')]
        [psobject] $DefaultProfile,

        [Parameter()]
        [switch] $AsJob,

        [Parameter(DontShow)]
        [switch] $Break,

        [Parameter(DontShow)]
        [object[]] $HttpPipelineAppend,

        [Parameter(DontShow)]
        [object[]] $HttpPipelinePrepend,

        [Parameter()]
        [switch] $NoWait,

        [Parameter()]
        [switch] $PassThru,

        [Parameter(DontShow)]
        [uri] $Proxy,

        [Parameter(DontShow)]
        [pscredential] $ProxyCredential,

        [Parameter(DontShow)]
        [switch] $ProxyUseDefaultCredentials
    )

    process {
        try {
            $proxy = Get-ArcProxySetting -BoundParameters $PSBoundParameters
            $ids = switch ($PSCmdlet.ParameterSetName) {
                'DeleteViaIdentity' { Resolve-ArcInputObject -InputObject $InputObject -Kind Extension }
                'DeleteViaIdentityMachine' {
                    $machine = Resolve-ArcInputObject -InputObject $MachineInputObject -Kind Machine
                    $machine.ExtensionName = $Name
                    $machine
                }
                default {
                    @{
                        SubscriptionId    = (Resolve-ArcSubscriptionId -SubscriptionId $SubscriptionId | Select-Object -First 1)
                        ResourceGroupName = $ResourceGroupName
                        MachineName       = $MachineName
                        ExtensionName     = $Name
                    }
                }
            }
            $path = Resolve-ArcPath -Route MachineExtension -Values @{
                subscriptionId = $ids.SubscriptionId; resourceGroupName = $ids.ResourceGroupName; machineName = $ids.MachineName; extensionName = $ids.ExtensionName
            }

            if (-not $PSCmdlet.ShouldProcess("$($ids.MachineName)/$($ids.ExtensionName)", 'Remove machine extension')) {
                return
            }
            if ($AsJob) {
                Start-ArcJob -CommandName $MyInvocation.MyCommand.Name -BoundParameters $PSBoundParameters
                return
            }
            $null = Invoke-ArcRequest -ProxySetting $proxy -Method DELETE -Path $path -LongRunning -NoWait:$NoWait
            if ($PassThru) {
                $true
            }
        }
        catch {
            $PSCmdlet.WriteError($_)
        }
    }
}
