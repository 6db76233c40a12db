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
        [Parameter(Mandatory, ParameterSetName = 'DeleteViaIdentityMachine')]
        [string] $Name,

        [Parameter(Mandatory, ParameterSetName = 'Delete')]
        [string] $MachineName,

        [Parameter(Mandatory, ParameterSetName = 'Delete')]
        [string] $ResourceGroupName,

        [Parameter(ParameterSetName = 'Delete')]
        [string] $SubscriptionId,

        [Parameter(Mandatory, ParameterSetName = 'DeleteViaIdentity', ValueFromPipeline)]
        [PSTypeName('AzConnectedMachineShim.MachineExtension')]
        [psobject] $InputObject,

        [Parameter(Mandatory, ParameterSetName = 'DeleteViaIdentityMachine', ValueFromPipeline)]
        [PSTypeName('AzConnectedMachineShim.Machine')]
        [psobject] $MachineInputObject,

        [Parameter()]
        [switch] $AsJob,

        [Parameter()]
        [switch] $NoWait,

        [Parameter()]
        [switch] $PassThru
    )

    process {
        try {
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
            $null = Invoke-ArcRequest -Method DELETE -Path $path -LongRunning -NoWait:$NoWait
            if ($PassThru) {
                $true
            }
        }
        catch {
            $PSCmdlet.WriteError($_)
        }
    }
}
