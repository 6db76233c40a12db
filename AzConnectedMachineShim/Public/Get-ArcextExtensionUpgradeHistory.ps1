function Get-ArcextExtensionUpgradeHistory {
    <#
    .SYNOPSIS
        Gets the upgrade history of a machine extension from the activity log: automatic and manual upgrades, rollbacks, retries.
    .DESCRIPTION
        Reads the Azure Monitor activity log (eventtypes/management/values, api-version 2015-04-01) for the
        extension's resource id between -StartTime and -EndTime, and writes the extension-upgrade events
        (operation Microsoft.HybridCompute/machines/upgradeExtensions/action, or any event that records a
        version change) with their versions: FromVersion, ToVersion, LastKnownGoodVersion and Attempt.
        IsAutomatic tells automatic upgrades (caller "Azure Regional Service Manager") from manual ones.
        This is the Arc documentation's "Check automatic extension upgrade history" recipe as one cmdlet; it
        has no Az.ConnectedMachine counterpart (Az users call Get-AzActivityLog).
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
    .PARAMETER StartTime
        Start of the time range. Default: 90 days ago (the activity log's retention).
    .PARAMETER EndTime
        End of the time range. Default: now.
    .PARAMETER Caller
        Only events of this caller, for example 'Azure Regional Service Manager' for automatic upgrades.
    .EXAMPLE
        PS C:\> Get-ArcextExtensionUpgradeHistory -ResourceGroupName contoso-rg -MachineName web01 -Name AzureMonitorWindowsAgent

        Shows every upgrade of the extension in the last 90 days, with from/to versions and status.
    .EXAMPLE
        PS C:\> Get-AzConnectedMachineExtension -ResourceGroupName contoso-rg -MachineName web01 | Get-ArcextExtensionUpgradeHistory -StartTime (Get-Date).AddDays(-7) | Where-Object IsAutomatic

        Shows the automatic upgrades of the last week for every extension of a machine.
    .INPUTS
        AzConnectedMachineShim.MachineExtension
    .OUTPUTS
        AzConnectedMachineShim.ExtensionUpgradeEvent
    .LINK
        Update-AzConnectedExtension
    #>
    [CmdletBinding(DefaultParameterSetName = 'Get', PositionalBinding = $false)]
    [OutputType('AzConnectedMachineShim.ExtensionUpgradeEvent')]
    param(
        [Parameter(Mandatory, ParameterSetName = 'Get')]
        [string] $Name,

        [Parameter(Mandatory, ParameterSetName = 'Get')]
        [string] $MachineName,

        [Parameter(Mandatory, ParameterSetName = 'Get')]
        [string] $ResourceGroupName,

        [Parameter(ParameterSetName = 'Get')]
        [string] $SubscriptionId,

        [Parameter(Mandatory, ParameterSetName = 'ViaIdentity', ValueFromPipeline)]
        [PSTypeName('AzConnectedMachineShim.MachineExtension')]
        [psobject] $InputObject,

        [Parameter()]
        [datetime] $StartTime = (Get-Date).AddDays(-90),

        [Parameter()]
        [datetime] $EndTime = (Get-Date),

        [Parameter()]
        [string] $Caller
    )

    process {
        try {
            $ids = if ($PSCmdlet.ParameterSetName -eq 'ViaIdentity') {
                Resolve-ArcInputObject -InputObject $InputObject -Kind Extension
            }
            else {
                @{
                    SubscriptionId    = (Resolve-ArcSubscriptionId -SubscriptionId $SubscriptionId | Select-Object -First 1)
                    ResourceGroupName = $ResourceGroupName
                    MachineName       = $MachineName
                    ExtensionName     = $Name
                }
            }
            $values = @{
                subscriptionId = $ids.SubscriptionId; resourceGroupName = $ids.ResourceGroupName; machineName = $ids.MachineName; extensionName = $ids.ExtensionName
            }
            $resourceId = Resolve-ArcPath -Route MachineExtension -Values $values
            $filter = "eventTimestamp ge '{0}' and eventTimestamp le '{1}' and resourceUri eq '{2}'" -f @(
                $StartTime.ToUniversalTime().ToString('o'), $EndTime.ToUniversalTime().ToString('o'), $resourceId)

            Get-ArcPagedResult -Path (Resolve-ArcPath -Route ActivityLog -Values $values) -Query ([ordered]@{ '$filter' = $filter }) -ApiVersion $script:ArcActivityLogApiVersion |
                Where-Object {
                    $operation = Get-ArcValue -InputObject $_ -Path 'operationName.value'
                    ($operation -eq $script:ArcUpgradeOperationName -or $null -ne (Get-ArcValue -InputObject $_ -Path 'properties.toVersion')) -and
                    (-not $Caller -or $_['caller'] -eq $Caller)
                } |
                ConvertTo-ArcExtensionUpgradeEvent
        }
        catch {
            $PSCmdlet.WriteError($_)
        }
    }
}
