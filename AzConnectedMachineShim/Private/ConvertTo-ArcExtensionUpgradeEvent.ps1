function ConvertTo-ArcExtensionUpgradeEvent {
    <#
    .SYNOPSIS
        Turns an activity-log event about an extension upgrade into the module's output object.
    .DESCRIPTION
        Flattens the Azure Monitor event (operationName, caller, status, subStatus, level, eventTimestamp,
        correlationId, resourceId) and the upgrade details arcext records in properties (fromVersion,
        toVersion, lastKnownGoodVersion, attempt). IsAutomatic is true for upgrades the service started
        (caller "Azure Regional Service Manager"), false for manual ones.
    .EXAMPLE
        $events | ConvertTo-ArcExtensionUpgradeEvent
    #>
    [CmdletBinding()]
    [OutputType('AzConnectedMachineShim.ExtensionUpgradeEvent')]
    param(
        [Parameter(Mandatory, ValueFromPipeline)]
        [System.Collections.IDictionary] $ActivityEvent
    )

    process {
        $timestamp = $ActivityEvent['eventTimestamp']
        if ($timestamp -and $timestamp -isnot [datetime]) {
            $timestamp = [datetime]::Parse([string]$timestamp, [cultureinfo]::InvariantCulture, [System.Globalization.DateTimeStyles]::RoundtripKind)
        }
        $resourceId = [string]$ActivityEvent['resourceId']
        $ids = Resolve-ArcResourceId -Id $resourceId
        $attempt = Get-ArcValue -InputObject $ActivityEvent -Path 'properties.attempt'
        $caller = [string]$ActivityEvent['caller']
        [pscustomobject]@{
            PSTypeName           = 'AzConnectedMachineShim.ExtensionUpgradeEvent'
            EventTimestamp       = $timestamp
            ExtensionName        = if ($ids) { $ids.ExtensionName } else { $null }
            MachineName          = if ($ids) { $ids.MachineName } else { $null }
            ResourceGroupName    = if ($ids) { $ids.ResourceGroupName } else { $null }
            OperationName        = Get-ArcValue -InputObject $ActivityEvent -Path 'operationName.value'
            OperationDisplayName = Get-ArcValue -InputObject $ActivityEvent -Path 'operationName.localizedValue'
            Status               = Get-ArcValue -InputObject $ActivityEvent -Path 'status.value'
            SubStatus            = if ($ActivityEvent['subStatus'] -is [System.Collections.IDictionary]) { $ActivityEvent['subStatus']['value'] } else { $ActivityEvent['subStatus'] }
            Level                = $ActivityEvent['level']
            Caller               = $caller
            IsAutomatic          = $caller -eq $script:ArcAutomaticUpgradeCaller
            FromVersion          = Get-ArcValue -InputObject $ActivityEvent -Path 'properties.fromVersion'
            ToVersion            = Get-ArcValue -InputObject $ActivityEvent -Path 'properties.toVersion'
            LastKnownGoodVersion = Get-ArcValue -InputObject $ActivityEvent -Path 'properties.lastKnownGoodVersion'
            Attempt              = if ($null -ne $attempt -and "$attempt" -ne '') { [int]$attempt } else { $null }
            CorrelationId        = $ActivityEvent['correlationId']
            ResourceId           = $resourceId
        }
    }
}
