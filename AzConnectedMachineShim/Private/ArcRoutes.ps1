# The ARM URL templates of every request the module builds, by route name. Nothing else in the module
# writes a resource path: cmdlets call Resolve-ArcPath with one of these names. The pytest layer
# (tests/test_powershell_module.py) checks each template against the server's OpenAPI document.
$script:ArcRoutes = [ordered]@{
    MachinesBySubscription    = '/subscriptions/{subscriptionId}/providers/Microsoft.HybridCompute/machines'
    MachinesByResourceGroup   = '/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.HybridCompute/machines'
    Machine                   = '/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.HybridCompute/machines/{machineName}'
    MachineExtensions         = '/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.HybridCompute/machines/{machineName}/extensions'
    MachineExtension          = '/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.HybridCompute/machines/{machineName}/extensions/{extensionName}'
    UpgradeExtensions         = '/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.HybridCompute/machines/{machineName}/upgradeExtensions'
    ExtensionMetadataVersions = '/subscriptions/{subscriptionId}/providers/Microsoft.HybridCompute/locations/{location}/publishers/{publisher}/extensionTypes/{extensionType}/versions'
    ExtensionMetadataVersion  = '/subscriptions/{subscriptionId}/providers/Microsoft.HybridCompute/locations/{location}/publishers/{publisher}/extensionTypes/{extensionType}/versions/{version}'
    ActivityLog               = '/subscriptions/{subscriptionId}/providers/Microsoft.Insights/eventtypes/management/values'
}

# api-version sent by default: the one Az.ConnectedMachine 1.0.0 targets. The activity log has its own.
$script:ArcDefaultApiVersion = '2024-07-10'
$script:ArcActivityLogApiVersion = '2015-04-01'

# Long-running operations: the wait when a response carries no Retry-After (Az's default), and the
# longest the module waits for one operation before it reports a timeout.
$script:ArcDefaultRetryAfterSeconds = 30
$script:ArcLroTimeoutSeconds = 3600

# The caller the activity log records for automatic (service-initiated) extension upgrades.
$script:ArcAutomaticUpgradeCaller = 'Azure Regional Service Manager'
$script:ArcUpgradeOperationName = 'Microsoft.HybridCompute/machines/upgradeExtensions/action'
