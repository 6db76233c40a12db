function Set-AzConnectedMachineExtension {
    <#
    .SYNOPSIS
        Replaces an extension of an Azure Arc-enabled machine (PUT with the full definition), and waits for it.
    .DESCRIPTION
        Same parameter sets as Az.ConnectedMachine: UpdateExpanded (default), Update (the whole extension as
        -ExtensionParameter, or piped in: an extension of another machine is copied, as Az's help example 2
        does; protected settings are never returned, so they are not copied), UpdateViaJsonString and
        UpdateViaJsonFilePath. Unlike Update-AzConnectedMachineExtension (PATCH), the request carries the whole
        extension definition, so -Location is required. -EnableAutomaticUpgrade and -AutoUpgradeMinorVersion
        are switches (-Switch:$false sends false; left out, nothing is sent). The operation is long-running;
        -NoWait returns at once, -AsJob runs it as a job.
    .PARAMETER Name
        The name of the extension.
    .PARAMETER MachineName
        The name of the machine.
    .PARAMETER ResourceGroupName
        The name of the resource group.
    .PARAMETER SubscriptionId
        The subscription id. Defaults to the connection's subscription.
    .PARAMETER Location
        The Azure region of the extension (usually the machine's).
    .PARAMETER Publisher
        The extension handler's publisher.
    .PARAMETER ExtensionType
        The extension type.
    .PARAMETER TypeHandlerVersion
        The version of the extension handler.
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
        PS C:\> Set-AzConnectedMachineExtension -ResourceGroupName contoso-rg -MachineName web01 -Location eastus -Name networkWatcher -Publisher Microsoft.Azure.NetworkWatcher -ExtensionType NetworkWatcherAgentWindows -TypeHandlerVersion 1.4.2798.3 -Setting @{ commandToExecute = 'powershell.exe ls' }

        Replaces the extension definition with new settings.
    .EXAMPLE
        PS C:\> $otherExtension = Get-AzConnectedMachineExtension -Name custom -ResourceGroupName ContosoTest -MachineName other
        PS C:\> $otherExtension | Set-AzConnectedMachineExtension -Name custom -ResourceGroupName ContosoTest -MachineName important

        Az's help example 2: copies an extension definition from one machine to another (Update set).
    .EXAMPLE
        PS C:\> Set-AzConnectedMachineExtension -ResourceGroupName contoso-rg -MachineName web01 -Name networkWatcher -JsonFilePath ./networkWatcher.json

        Sends a complete MachineExtension body kept in a file.
    .INPUTS
        AzConnectedMachineShim.MachineExtension (or any extension object, as -ExtensionParameter)
    .OUTPUTS
        AzConnectedMachineShim.MachineExtension
    .LINK
        New-AzConnectedMachineExtension
    #>
    [CmdletBinding(DefaultParameterSetName = 'UpdateExpanded', PositionalBinding = $false, SupportsShouldProcess, ConfirmImpact = 'Medium')]
    [OutputType('AzConnectedMachineShim.MachineExtension')]
    param(
        [Parameter(Mandatory)]
        [string] $MachineName,

        [Parameter(Mandatory)]
        [string] $Name,

        [Parameter(Mandatory)]
        [string] $ResourceGroupName,

        [Parameter()]
        [string] $SubscriptionId,

        [Parameter(Mandatory, ParameterSetName = 'Update', ValueFromPipeline)]
        [object] $ExtensionParameter,

        [Parameter(Mandatory, ParameterSetName = 'UpdateExpanded')]
        [string] $Location,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [switch] $AutoUpgradeMinorVersion,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [switch] $EnableAutomaticUpgrade,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [string] $ExtensionType,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [string] $ForceRerun,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [string] $InstanceViewName,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [string] $InstanceViewType,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [string] $InstanceViewTypeHandlerVersion,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Alias('ProtectedSettings')]
        [hashtable] $ProtectedSetting,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [string] $Publisher,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [Alias('Settings')]
        [hashtable] $Setting,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [string] $StatusCode,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [string] $StatusDisplayStatus,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [string] $StatusLevel,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [string] $StatusMessage,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [datetime] $StatusTime,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
        [hashtable] $Tag,

        [Parameter(ParameterSetName = 'UpdateExpanded')]
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
            $ids = @{ SubscriptionId = (Resolve-ArcSubscriptionId -SubscriptionId $SubscriptionId | Select-Object -First 1); ResourceGroupName = $ResourceGroupName; MachineName = $MachineName }
            $path = Resolve-ArcPath -Route MachineExtension -Values @{
                subscriptionId = $ids.SubscriptionId; resourceGroupName = $ids.ResourceGroupName; machineName = $ids.MachineName; extensionName = $Name
            }
            $body = switch ($PSCmdlet.ParameterSetName) {
                'UpdateViaJsonString' { Read-ArcJsonBody -JsonString $JsonString }
                'UpdateViaJsonFilePath' { Read-ArcJsonBody -JsonFilePath $JsonFilePath }
                'Update' {
                    $whole = ConvertFrom-ArcExtensionParameter -InputObject $ExtensionParameter
                    if (-not $whole.Contains('location')) {
                        # as Az requires Location in IMachineExtension; a piped extension always carries it
                        $machineValues = @{ subscriptionId = $ids.SubscriptionId; resourceGroupName = $ids.ResourceGroupName; machineName = $ids.MachineName }
                        $machine = Invoke-ArcRequest -ProxySetting $proxy -Method GET -Path (Resolve-ArcPath -Route Machine -Values $machineValues)
                        $whole.Insert(0, 'location', [string]$machine.Body['location'])
                    }
                    $whole
                }
                default { New-ArcExtensionBody -BoundParameters $PSBoundParameters }
            }

            if (-not $PSCmdlet.ShouldProcess("$($ids.MachineName)/$Name", 'Replace machine extension')) {
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
