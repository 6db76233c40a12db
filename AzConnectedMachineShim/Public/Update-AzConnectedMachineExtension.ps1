function Update-AzConnectedMachineExtension {
    <#
    .SYNOPSIS
        Updates properties of an extension of an Azure Arc-enabled machine (PATCH), for example turns automatic upgrade on or off.
    .DESCRIPTION
        Same parameter sets as Az.ConnectedMachine: UpdateExpanded (default), UpdateViaIdentityExpanded
        (an extension piped in from Get-AzConnectedMachineExtension), UpdateViaIdentityMachineExpanded
        (a machine piped in, with -Name), UpdateViaJsonString and UpdateViaJsonFilePath.
        Only the parameters given are sent. -EnableAutomaticUpgrade sends true, -EnableAutomaticUpgrade:$false
        sends false, and leaving it out leaves the property as it is. -TypeHandlerVersion is accepted but not
        sent, as in Az.ConnectedMachine: change versions with Update-AzConnectedExtension. The operation is
        long-running: the cmdlet waits for it (honouring Retry-After) and writes the updated extension;
        -NoWait returns at once, -AsJob runs it as a job.
    .PARAMETER Name
        The name of the extension.
    .PARAMETER MachineName
        The name of the machine.
    .PARAMETER ResourceGroupName
        The name of the resource group. As in Az, -ResourceGroup works as an unambiguous prefix.
    .PARAMETER SubscriptionId
        The subscription id. Defaults to the connection's subscription.
    .PARAMETER InputObject
        An extension from Get-AzConnectedMachineExtension (taken from the pipeline); its Id names the extension.
    .PARAMETER MachineInputObject
        A machine from Get-AzConnectedMachine (taken from the pipeline); -Name names the extension on it.
    .PARAMETER AutoUpgradeMinorVersion
        Switch: use the latest minor version at deployment time. -AutoUpgradeMinorVersion:$false sends false.
    .PARAMETER EnableAutomaticUpgrade
        Switch: turn automatic extension upgrade on; -EnableAutomaticUpgrade:$false turns it off.
    .PARAMETER ForceRerun
        Sent as forceUpdateTag: a changed value makes the handler run again.
    .PARAMETER Publisher
        The extension handler's publisher.
    .PARAMETER Type
        The extension type (Az names this parameter -Type on Update, -ExtensionType on New/Set).
    .PARAMETER TypeHandlerVersion
        Accepted for compatibility and not sent (Az.ConnectedMachine strips it from the PATCH body).
    .PARAMETER Setting
        Public settings of the extension (hashtable). Alias: Settings.
    .PARAMETER ProtectedSetting
        Protected settings (hashtable). Sent once; never returned by the server or written by any cmdlet. Alias: ProtectedSettings.
    .PARAMETER Tag
        Resource tags (hashtable).
    .PARAMETER JsonString
        The MachineExtensionUpdate request body as JSON text.
    .PARAMETER JsonFilePath
        Path of a file holding the MachineExtensionUpdate request body as JSON.
    .PARAMETER AsJob
        Run the command as a job and return the job.
    .PARAMETER NoWait
        Return as soon as the server accepted the request, without waiting for the operation.
    .PARAMETER WhatIf
        Show what would happen without sending the request.
    .PARAMETER Confirm
        Ask for confirmation before sending the request.
    .EXAMPLE
        PS C:\> Update-AzConnectedMachineExtension -ResourceGroup resourceGroupName -MachineName machineName -Name extensionName -EnableAutomaticUpgrade

        Enables automatic upgrade for an extension (Arc documentation).
    .EXAMPLE
        PS C:\> Update-AzConnectedMachineExtension -ResourceGroup resourceGroupName -MachineName machineName -Name extensionName -EnableAutomaticUpgrade:$false

        Disables automatic upgrade for an extension (Arc documentation).
    .EXAMPLE
        PS C:\> Get-AzConnectedMachineExtension -ResourceGroupName contoso-rg -MachineName web01 | Update-AzConnectedMachineExtension -EnableAutomaticUpgrade:$false

        Turns automatic upgrade off for every extension of a machine, through the pipeline.
    .EXAMPLE
        PS C:\> Update-AzConnectedMachineExtension -ResourceGroupName contoso-rg -MachineName web01 -Name custom -Setting @{ commandToExecute = 'hostname' } -WhatIf

        Shows which extension would be updated, without sending anything.
    .INPUTS
        AzConnectedMachineShim.MachineExtension
        AzConnectedMachineShim.Machine
    .OUTPUTS
        AzConnectedMachineShim.MachineExtension
    .LINK
        Get-AzConnectedMachineExtension
    .LINK
        Update-AzConnectedExtension
    #>
    [CmdletBinding(DefaultParameterSetName = 'UpdateExpanded', PositionalBinding = $false, SupportsShouldProcess, ConfirmImpact = 'Medium')]
    [OutputType('AzConnectedMachineShim.MachineExtension')]
    param(
        [Parameter(Mandatory, ParameterSetName = 'UpdateExpanded')]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaIdentityMachineExpanded')]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaJsonString')]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaJsonFilePath')]
        [string] $Name,

        [Parameter(Mandatory, ParameterSetName = 'UpdateExpanded')]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaJsonString')]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaJsonFilePath')]
        [string] $MachineName,

        [Parameter(Mandatory, ParameterSetName = 'UpdateExpanded')]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaJsonString')]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaJsonFilePath')]
        [string] $ResourceGroupName,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaJsonString')]
        [Parameter(ParameterSetName = 'UpdateViaJsonFilePath')]
        [string] $SubscriptionId,

        [Parameter(Mandatory, ParameterSetName = 'UpdateViaIdentityExpanded', ValueFromPipeline)]
        [PSTypeName('AzConnectedMachineShim.MachineExtension')]
        [psobject] $InputObject,

        [Parameter(Mandatory, ParameterSetName = 'UpdateViaIdentityMachineExpanded', ValueFromPipeline)]
        [PSTypeName('AzConnectedMachineShim.Machine')]
        [psobject] $MachineInputObject,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityMachineExpanded')]
        [switch] $AutoUpgradeMinorVersion,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityMachineExpanded')]
        [switch] $EnableAutomaticUpgrade,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityMachineExpanded')]
        [string] $ForceRerun,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityMachineExpanded')]
        [string] $Publisher,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityMachineExpanded')]
        [string] $Type,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityMachineExpanded')]
        [string] $TypeHandlerVersion,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityMachineExpanded')]
        [Alias('Settings')]
        [hashtable] $Setting,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityMachineExpanded')]
        [Alias('ProtectedSettings')]
        [hashtable] $ProtectedSetting,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityMachineExpanded')]
        [hashtable] $Tag,

        [Parameter(Mandatory, ParameterSetName = 'UpdateViaJsonString')]
        [string] $JsonString,

        [Parameter(Mandatory, ParameterSetName = 'UpdateViaJsonFilePath')]
        [string] $JsonFilePath,

        [Parameter()]
        [switch] $AsJob,

        [Parameter()]
        [switch] $NoWait
    )

    process {
        try {
            $ids = switch ($PSCmdlet.ParameterSetName) {
                'UpdateViaIdentityExpanded' { Resolve-ArcInputObject -InputObject $InputObject -Kind Extension }
                'UpdateViaIdentityMachineExpanded' {
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
            $body = switch ($PSCmdlet.ParameterSetName) {
                'UpdateViaJsonString' { Read-ArcJsonBody -JsonString $JsonString }
                'UpdateViaJsonFilePath' { Read-ArcJsonBody -JsonFilePath $JsonFilePath }
                default { New-ArcExtensionBody -BoundParameters $PSBoundParameters -Patch }
            }

            if (-not $PSCmdlet.ShouldProcess("$($ids.MachineName)/$($ids.ExtensionName)", 'Update machine extension')) {
                return
            }
            if ($AsJob) {
                Start-ArcJob -CommandName $MyInvocation.MyCommand.Name -BoundParameters $PSBoundParameters
                return
            }
            $response = Invoke-ArcRequest -Method PATCH -Path $path -Body $body -LongRunning -NoWait:$NoWait
            if ($response.Body -is [System.Collections.IDictionary] -and $response.Body['id']) {
                $response.Body | ConvertTo-ArcMachineExtension
            }
            else {
                Write-Verbose "Accepted (HTTP $($response.StatusCode)); status: $($response.Headers['Azure-AsyncOperation'])"
            }
        }
        catch {
            $PSCmdlet.WriteError($_)
        }
    }
}
