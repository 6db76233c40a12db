function Update-AzConnectedMachineExtension {
    <#
    .SYNOPSIS
        Updates properties of an extension of an Azure Arc-enabled machine (PATCH), for example turns automatic upgrade on or off.
    .DESCRIPTION
        Same parameter sets as Az.ConnectedMachine: UpdateExpanded (default), UpdateViaIdentityExpanded
        (an extension piped in from Get-AzConnectedMachineExtension), UpdateViaIdentityMachineExpanded
        (a machine piped in, with -Name), the whole-object sets Update, UpdateViaIdentity and
        UpdateViaIdentityMachine (-ExtensionParameter, or an extension piped in), UpdateViaJsonString and
        UpdateViaJsonFilePath. Only the parameters given are sent. -EnableAutomaticUpgrade sends true,
        -EnableAutomaticUpgrade:$false sends false, and leaving it out leaves the property as it is.
        -TypeHandlerVersion is sent in the PATCH, as Az sends it. The operation is long-running: the cmdlet waits
        for it (honouring Retry-After) and writes the updated extension; -NoWait returns at once, -AsJob runs it
        as a job.
    .PARAMETER Name
        The name of the extension.
    .PARAMETER MachineName
        The name of the machine.
    .PARAMETER ResourceGroupName
        The name of the resource group. As in Az, -ResourceGroup works as an unambiguous prefix.
    .PARAMETER SubscriptionId
        The subscription id. Defaults to the connection's subscription.
    .PARAMETER InputObject
        The extension: an extension from Get-AzConnectedMachineExtension (taken from the pipeline), any object with
        Id, a hashtable with Id or with SubscriptionId, ResourceGroupName, MachineName and ExtensionName, or the id.
    .PARAMETER MachineInputObject
        The machine: a machine from Get-AzConnectedMachine (taken from the pipeline), any object with Id, a
        hashtable with Id or with SubscriptionId, ResourceGroupName and MachineName, or the id; -Name names the
        extension on it.
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
        The version of the extension handler; sent in the PATCH.
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
    .PARAMETER ExtensionParameter
        The whole extension as one object: an extension from Get-AzConnectedMachineExtension (of this or another machine), an Az-style object or a hashtable with Location, Tag, Setting, ProtectedSetting, Publisher, MachineExtensionType (or Type/ExtensionType), TypeHandlerVersion, EnableAutomaticUpgrade, AutoUpgradeMinorVersion, ForceUpdateTag; or an ARM-shaped hashtable with 'properties'.
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
        PS C:\> Update-AzConnectedMachineExtension -ResourceGroup resourceGroupName -MachineName machineName -Name extensionName -EnableAutomaticUpgrade

        Enables automatic upgrade for an extension (Arc documentation).
    .EXAMPLE
        PS C:\> Update-AzConnectedMachineExtension -ResourceGroup resourceGroupName -MachineName machineName -Name extensionName -EnableAutomaticUpgrade:$false

        Disables automatic upgrade for an extension (Arc documentation).
    .EXAMPLE
        PS C:\> Get-AzConnectedMachineExtension -ResourceGroupName contoso-rg -MachineName web01 | Update-AzConnectedMachineExtension -EnableAutomaticUpgrade:$false

        Turns automatic upgrade off for every extension of a machine, through the pipeline.
    .EXAMPLE
        PS C:\> $extToUpdate = Get-AzConnectedMachineExtension -ResourceGroupName connectedMachines -MachineName linux-eastus1_1 -Name customScript
        PS C:\> $extToUpdate.Setting.commandToExecute = "ls -l"
        PS C:\> $extToUpdate | Update-AzConnectedMachineExtension -ExtensionParameter $extToUpdate

        Az's help example 4: edits the object read and sends it back (UpdateViaIdentity).
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
        [Parameter(Mandatory, ParameterSetName = 'Update')]
        [Parameter(Mandatory, ParameterSetName = 'UpdateExpanded')]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaJsonFilePath')]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaJsonString')]
        [string] $MachineName,

        [Parameter(Mandatory, ParameterSetName = 'Update')]
        [Parameter(Mandatory, ParameterSetName = 'UpdateExpanded')]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaJsonFilePath')]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaJsonString')]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaIdentityMachine')]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaIdentityMachineExpanded')]
        [string] $Name,

        [Parameter(Mandatory, ParameterSetName = 'Update')]
        [Parameter(Mandatory, ParameterSetName = 'UpdateExpanded')]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaJsonFilePath')]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaJsonString')]
        [string] $ResourceGroupName,

        [Parameter(ParameterSetName = 'Update')]
        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaJsonFilePath')]
        [Parameter(ParameterSetName = 'UpdateViaJsonString')]
        [string] $SubscriptionId,

        [Parameter(Mandatory, ParameterSetName = 'UpdateViaIdentity', ValueFromPipeline)]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaIdentityExpanded', ValueFromPipeline)]
        [object] $InputObject,

        [Parameter(Mandatory, ParameterSetName = 'UpdateViaIdentityMachine', ValueFromPipeline)]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaIdentityMachineExpanded', ValueFromPipeline)]
        [object] $MachineInputObject,

        [Parameter(Mandatory, ParameterSetName = 'Update', ValueFromPipeline)]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaIdentity', ValueFromPipeline)]
        [Parameter(Mandatory, ParameterSetName = 'UpdateViaIdentityMachine', ValueFromPipeline)]
        [object] $ExtensionParameter,

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
        [string] $Type,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityMachineExpanded')]
        [string] $ForceRerun,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityMachineExpanded')]
        [Alias('ProtectedSettings')]
        [hashtable] $ProtectedSetting,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityMachineExpanded')]
        [string] $Publisher,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityMachineExpanded')]
        [Alias('Settings')]
        [hashtable] $Setting,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityMachineExpanded')]
        [hashtable] $Tag,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'UpdateViaIdentityMachineExpanded')]
        [string] $TypeHandlerVersion,

        [Parameter(Mandatory, ParameterSetName = 'UpdateViaJsonFilePath')]
        [string] $JsonFilePath,

        [Parameter(Mandatory, ParameterSetName = 'UpdateViaJsonString')]
        [string] $JsonString,

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
            $set = $PSCmdlet.ParameterSetName
            $ids = switch -Wildcard ($set) {
                'UpdateViaIdentity' { Resolve-ArcInputObject -InputObject $InputObject -Kind Extension }
                'UpdateViaIdentityExpanded' { Resolve-ArcInputObject -InputObject $InputObject -Kind Extension }
                'UpdateViaIdentityMachine*' {
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
            $body = switch ($set) {
                'UpdateViaJsonString' { Read-ArcJsonBody -JsonString $JsonString }
                'UpdateViaJsonFilePath' { Read-ArcJsonBody -JsonFilePath $JsonFilePath }
                { $_ -in @('Update', 'UpdateViaIdentity', 'UpdateViaIdentityMachine') } { ConvertFrom-ArcExtensionParameter -InputObject $ExtensionParameter -Patch }
                default { New-ArcExtensionBody -BoundParameters $PSBoundParameters -Patch }
            }

            if (-not $PSCmdlet.ShouldProcess("$($ids.MachineName)/$($ids.ExtensionName)", 'Update machine extension')) {
                return
            }
            if ($AsJob) {
                Start-ArcJob -CommandName $MyInvocation.MyCommand.Name -BoundParameters $PSBoundParameters
                return
            }
            $response = Invoke-ArcRequest -ProxySetting $proxy -Method PATCH -Path $path -Body $body -LongRunning -NoWait:$NoWait
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
