function New-AzConnectedMachineExtension {
    <#
    .SYNOPSIS
        Installs an extension on an Azure Arc-enabled machine (PUT), and waits for the operation to finish.
    .DESCRIPTION
        Same parameter sets as Az.ConnectedMachine: CreateExpanded (default), CreateViaIdentityMachineExpanded
        (a machine piped in as -MachineInputObject, with -Name), CreateViaIdentityExpanded (the new extension's
        identity as -InputObject: its id, or a hashtable with ResourceGroupName, MachineName, ExtensionName),
        the whole-object sets Create, CreateViaIdentity and CreateViaIdentityMachine (-ExtensionParameter, or an
        extension piped in; without a Location, the machine's is used), CreateViaJsonString and
        CreateViaJsonFilePath.
        -EnableAutomaticUpgrade and -AutoUpgradeMinorVersion are switches: given, they send true; given as
        -Switch:$false, they send false; left out, the server's default applies (automatic upgrade is on by
        default). The operation is long-running: the cmdlet polls it, honouring Retry-After, and writes the
        extension when it has finished; -NoWait returns at once, -AsJob runs it as a job.
    .PARAMETER Name
        The name of the extension.
    .PARAMETER MachineName
        The name of the machine.
    .PARAMETER ResourceGroupName
        The name of the resource group.
    .PARAMETER SubscriptionId
        The subscription id. Defaults to the connection's subscription.
    .PARAMETER MachineInputObject
        The machine: a machine from Get-AzConnectedMachine (taken from the pipeline), any object with Id, a
        hashtable with Id or with SubscriptionId, ResourceGroupName and MachineName, or the id.
    .PARAMETER Location
        The Azure region of the extension (usually the machine's).
    .PARAMETER Publisher
        The extension handler's publisher, for example Microsoft.Azure.Monitor.
    .PARAMETER ExtensionType
        The extension type, for example AzureMonitorWindowsAgent.
    .PARAMETER TypeHandlerVersion
        The version of the extension handler to install.
    .PARAMETER ForceRerun
        Sent as forceUpdateTag: a changed value makes the handler run again.
    .PARAMETER AutoUpgradeMinorVersion
        Switch: use the latest minor version at deployment time.
    .PARAMETER EnableAutomaticUpgrade
        Switch: let the platform upgrade the extension automatically when a newer version is published.
    .PARAMETER Setting
        Public settings of the extension (hashtable). Alias: Settings.
    .PARAMETER ProtectedSetting
        Protected settings (hashtable). Sent once; never returned by the server or written by any cmdlet. Alias: ProtectedSettings.
    .PARAMETER Tag
        Resource tags (hashtable).
    .PARAMETER InstanceViewName
        instanceView.name, as in Az (rarely needed).
    .PARAMETER InstanceViewType
        instanceView.type, as in Az (rarely needed).
    .PARAMETER InstanceViewTypeHandlerVersion
        instanceView.typeHandlerVersion, as in Az (rarely needed).
    .PARAMETER StatusCode
        instanceView.status.code, as in Az (rarely needed).
    .PARAMETER StatusDisplayStatus
        instanceView.status.displayStatus, as in Az (rarely needed).
    .PARAMETER StatusLevel
        instanceView.status.level, as in Az (rarely needed).
    .PARAMETER StatusMessage
        instanceView.status.message, as in Az (rarely needed).
    .PARAMETER StatusTime
        instanceView.status.time, as in Az (rarely needed).
    .PARAMETER JsonString
        The whole MachineExtension request body as JSON text.
    .PARAMETER JsonFilePath
        Path of a file holding the whole MachineExtension request body as JSON.
    .PARAMETER AsJob
        Run the command as a job and return the job.
    .PARAMETER NoWait
        Return as soon as the server accepted the request, without waiting for the operation.
    .PARAMETER WhatIf
        Show what would happen without sending the request.
    .PARAMETER Confirm
        Ask for confirmation before sending the request.
    .PARAMETER InputObject
        The identity of the resource: an object with an Id (as Get-AzConnectedMachineExtension writes), a hashtable with Id or with SubscriptionId, ResourceGroupName, MachineName and ExtensionName, or the resource id as a string. Taken from the pipeline.
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
        PS C:\> New-AzConnectedMachineExtension -ResourceGroupName contoso-rg -MachineName web01 -Location eastus -Name AzureMonitorWindowsAgent -Publisher Microsoft.Azure.Monitor -ExtensionType AzureMonitorWindowsAgent -TypeHandlerVersion 1.22 -EnableAutomaticUpgrade

        Installs the Azure Monitor agent with automatic upgrade on.
    .EXAMPLE
        PS C:\> $settings = @{ commandToExecute = 'powershell.exe -c "Get-Process"' }
        PS C:\> New-AzConnectedMachineExtension -ResourceGroupName contoso-rg -MachineName web01 -Location eastus -Name custom -Publisher Microsoft.Compute -ExtensionType CustomScriptExtension -Setting $settings -EnableAutomaticUpgrade:$false

        Installs the custom script extension with automatic upgrade explicitly off.
    .EXAMPLE
        PS C:\> Get-AzConnectedMachine -ResourceGroupName contoso-rg -Name web01 | New-AzConnectedMachineExtension -Name ama -Location eastus -Publisher Microsoft.Azure.Monitor -ExtensionType AzureMonitorWindowsAgent

        Creates the extension on a piped machine.
    .EXAMPLE
        PS C:\> Get-AzConnectedMachineExtension -ResourceGroupName contoso-rg -MachineName web01 -Name ama | New-AzConnectedMachineExtension -ResourceGroupName contoso-rg -MachineName web02 -Name ama

        Copies an extension definition to another machine (Create set, the extension piped in as -ExtensionParameter).
    .INPUTS
        AzConnectedMachineShim.Machine
        AzConnectedMachineShim.MachineExtension (as -ExtensionParameter)
    .OUTPUTS
        AzConnectedMachineShim.MachineExtension
    .LINK
        Update-AzConnectedMachineExtension
    #>
    [CmdletBinding(DefaultParameterSetName = 'CreateExpanded', PositionalBinding = $false, SupportsShouldProcess, ConfirmImpact = 'Medium')]
    [OutputType('AzConnectedMachineShim.MachineExtension')]
    param(
        [Parameter(Mandatory, ParameterSetName = 'Create')]
        [Parameter(Mandatory, ParameterSetName = 'CreateExpanded')]
        [Parameter(Mandatory, ParameterSetName = 'CreateViaJsonFilePath')]
        [Parameter(Mandatory, ParameterSetName = 'CreateViaJsonString')]
        [string] $MachineName,

        [Parameter(Mandatory, ParameterSetName = 'Create')]
        [Parameter(Mandatory, ParameterSetName = 'CreateExpanded')]
        [Parameter(Mandatory, ParameterSetName = 'CreateViaJsonFilePath')]
        [Parameter(Mandatory, ParameterSetName = 'CreateViaJsonString')]
        [Parameter(Mandatory, ParameterSetName = 'CreateViaIdentityMachine')]
        [Parameter(Mandatory, ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [string] $Name,

        [Parameter(Mandatory, ParameterSetName = 'Create')]
        [Parameter(Mandatory, ParameterSetName = 'CreateExpanded')]
        [Parameter(Mandatory, ParameterSetName = 'CreateViaJsonFilePath')]
        [Parameter(Mandatory, ParameterSetName = 'CreateViaJsonString')]
        [string] $ResourceGroupName,

        [Parameter(ParameterSetName = 'Create')]
        [Parameter(ParameterSetName = 'CreateExpanded')]
        [Parameter(ParameterSetName = 'CreateViaJsonFilePath')]
        [Parameter(ParameterSetName = 'CreateViaJsonString')]
        [string] $SubscriptionId,

        [Parameter(Mandatory, ParameterSetName = 'CreateViaIdentity', ValueFromPipeline)]
        [Parameter(Mandatory, ParameterSetName = 'CreateViaIdentityExpanded', ValueFromPipeline)]
        [object] $InputObject,

        [Parameter(Mandatory, ParameterSetName = 'CreateViaIdentityMachine', ValueFromPipeline)]
        [Parameter(Mandatory, ParameterSetName = 'CreateViaIdentityMachineExpanded', ValueFromPipeline)]
        [object] $MachineInputObject,

        [Parameter(Mandatory, ParameterSetName = 'Create', ValueFromPipeline)]
        [Parameter(Mandatory, ParameterSetName = 'CreateViaIdentity', ValueFromPipeline)]
        [Parameter(Mandatory, ParameterSetName = 'CreateViaIdentityMachine', ValueFromPipeline)]
        [object] $ExtensionParameter,

        [Parameter(Mandatory, ParameterSetName = 'CreateExpanded')]
        [Parameter(Mandatory, ParameterSetName = 'CreateViaIdentityExpanded')]
        [Parameter(Mandatory, ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [string] $Location,

        [Parameter(ParameterSetName = 'CreateExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [switch] $AutoUpgradeMinorVersion,

        [Parameter(ParameterSetName = 'CreateExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [switch] $EnableAutomaticUpgrade,

        [Parameter(ParameterSetName = 'CreateExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [string] $ExtensionType,

        [Parameter(ParameterSetName = 'CreateExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [string] $ForceRerun,

        [Parameter(ParameterSetName = 'CreateExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [string] $InstanceViewName,

        [Parameter(ParameterSetName = 'CreateExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [string] $InstanceViewType,

        [Parameter(ParameterSetName = 'CreateExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [string] $InstanceViewTypeHandlerVersion,

        [Parameter(ParameterSetName = 'CreateExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [Alias('ProtectedSettings')]
        [hashtable] $ProtectedSetting,

        [Parameter(ParameterSetName = 'CreateExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [string] $Publisher,

        [Parameter(ParameterSetName = 'CreateExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [Alias('Settings')]
        [hashtable] $Setting,

        [Parameter(ParameterSetName = 'CreateExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [string] $StatusCode,

        [Parameter(ParameterSetName = 'CreateExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [string] $StatusDisplayStatus,

        [Parameter(ParameterSetName = 'CreateExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [string] $StatusLevel,

        [Parameter(ParameterSetName = 'CreateExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [string] $StatusMessage,

        [Parameter(ParameterSetName = 'CreateExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [datetime] $StatusTime,

        [Parameter(ParameterSetName = 'CreateExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [hashtable] $Tag,

        [Parameter(ParameterSetName = 'CreateExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityExpanded')]
        [Parameter(ParameterSetName = 'CreateViaIdentityMachineExpanded')]
        [string] $TypeHandlerVersion,

        [Parameter(Mandatory, ParameterSetName = 'CreateViaJsonFilePath')]
        [string] $JsonFilePath,

        [Parameter(Mandatory, ParameterSetName = 'CreateViaJsonString')]
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
                'CreateViaIdentityMachine*' {
                    $machine = Resolve-ArcInputObject -InputObject $MachineInputObject -Kind Machine
                    $machine.ExtensionName = $Name
                    $machine
                }
                'CreateViaIdentity' { Resolve-ArcInputObject -InputObject $InputObject -Kind Extension }
                'CreateViaIdentityExpanded' { Resolve-ArcInputObject -InputObject $InputObject -Kind Extension }
                default {
                    @{ SubscriptionId = (Resolve-ArcSubscriptionId -SubscriptionId $SubscriptionId | Select-Object -First 1); ResourceGroupName = $ResourceGroupName; MachineName = $MachineName; ExtensionName = $Name }
                }
            }
            $path = Resolve-ArcPath -Route MachineExtension -Values @{
                subscriptionId = $ids.SubscriptionId; resourceGroupName = $ids.ResourceGroupName; machineName = $ids.MachineName; extensionName = $ids.ExtensionName
            }
            $body = switch ($set) {
                'CreateViaJsonString' { Read-ArcJsonBody -JsonString $JsonString }
                'CreateViaJsonFilePath' { Read-ArcJsonBody -JsonFilePath $JsonFilePath }
                { $_ -in @('Create', 'CreateViaIdentity', 'CreateViaIdentityMachine') } {
                    $whole = ConvertFrom-ArcExtensionParameter -InputObject $ExtensionParameter
                    if (-not $whole.Contains('location')) {
                        $machineValues = @{ subscriptionId = $ids.SubscriptionId; resourceGroupName = $ids.ResourceGroupName; machineName = $ids.MachineName }
                        $machineBody = (Invoke-ArcRequest -ProxySetting $proxy -Method GET -Path (Resolve-ArcPath -Route Machine -Values $machineValues)).Body
                        $whole.Insert(0, 'location', [string]$machineBody['location'])
                    }
                    $whole
                }
                default { New-ArcExtensionBody -BoundParameters $PSBoundParameters }
            }

            if (-not $PSCmdlet.ShouldProcess("$($ids.MachineName)/$($ids.ExtensionName)", 'Create machine extension')) {
                return
            }
            if ($AsJob) {
                Start-ArcJob -CommandName $MyInvocation.MyCommand.Name -BoundParameters $PSBoundParameters
                return
            }
            $response = Invoke-ArcRequest -ProxySetting $proxy -Method PUT -Path $path -Body $body -LongRunning -NoWait:$NoWait
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
