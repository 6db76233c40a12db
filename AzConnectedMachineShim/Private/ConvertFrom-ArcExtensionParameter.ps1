function ConvertFrom-ArcExtensionParameter {
    <#
    .SYNOPSIS
        Builds an extension request body from Az's -ExtensionParameter (a whole IMachineExtension / IMachineExtensionUpdate).
    .DESCRIPTION
        Accepts what a script passes as -ExtensionParameter, or pipes in:
        - an extension object (the shim's Get-AzConnectedMachineExtension output, or an Az one): its Location,
          Tag/Tags, Setting, Publisher, MachineExtensionType, TypeHandlerVersion, EnableAutomaticUpgrade,
          AutoUpgradeMinorVersion, ForceUpdateTag and InstanceView*/Status* properties;
        - a hashtable with those names (as Az's NOTES section describes; Type and ExtensionType also name the
          extension type, ProtectedSetting the protected settings);
        - an ARM-shaped hashtable with a 'properties' key, sent as it is.
        Read-only values (Id, Name, ProvisioningState, the resource Type 'Microsoft.HybridCompute/...') are
        never sent. -Patch builds a MachineExtensionUpdate (no location, no instance view).
    .EXAMPLE
        $body = ConvertFrom-ArcExtensionParameter -InputObject $ExtensionParameter -Patch
    #>
    [CmdletBinding()]
    [OutputType([System.Collections.Specialized.OrderedDictionary])]
    param(
        [Parameter(Mandatory)]
        [object] $InputObject,

        [switch] $Patch
    )

    $read = {
        param([string[]] $Names)
        foreach ($name in $Names) {
            if ($InputObject -is [System.Collections.IDictionary]) {
                foreach ($key in $InputObject.Keys) {
                    if ([string]$key -eq $name -and $null -ne $InputObject[$key]) { return , $InputObject[$key] }
                }
            }
            else {
                $property = $InputObject.PSObject.Properties[$name]
                if ($property -and $null -ne $property.Value) { return , $property.Value }
            }
        }
        $null
    }
    $toTable = {
        param([object] $Value)
        if ($null -eq $Value -or $Value -is [System.Collections.IDictionary]) { return , $Value }
        $table = [ordered]@{}
        foreach ($property in $Value.PSObject.Properties) { $table[$property.Name] = $property.Value }
        , $table
    }

    if ($InputObject -is [string]) {
        return Read-ArcJsonBody -JsonString $InputObject
    }
    $armProperties = & $read @('properties')
    if ($InputObject -is [System.Collections.IDictionary] -and $armProperties -is [System.Collections.IDictionary]) {
        $body = [ordered]@{}
        foreach ($key in $InputObject.Keys) {
            if ([string]$key -in @('location', 'tags', 'properties')) { $body[[string]$key] = $InputObject[$key] }
        }
        return $body
    }

    $properties = [ordered]@{}
    $map = [ordered]@{
        publisher               = @('Publisher')
        type                    = @('MachineExtensionType', 'ExtensionType')
        typeHandlerVersion      = @('TypeHandlerVersion')
        enableAutomaticUpgrade  = @('EnableAutomaticUpgrade')
        autoUpgradeMinorVersion = @('AutoUpgradeMinorVersion')
        forceUpdateTag          = @('ForceUpdateTag', 'ForceRerun')
        settings                = @('Setting', 'Settings')
        protectedSettings       = @('ProtectedSetting', 'ProtectedSettings')
    }
    foreach ($target in $map.Keys) {
        $value = & $read $map[$target]
        if ($null -ne $value) {
            if ($target -in @('settings', 'protectedSettings')) { $value = & $toTable $value }
            if ($target -in @('enableAutomaticUpgrade', 'autoUpgradeMinorVersion')) { $value = [bool]$value }
            $properties[$target] = $value
        }
    }
    if (-not $properties.Contains('type')) {
        $type = & $read @('Type')
        if ($type -and "$type" -notmatch '/') {
            $properties['type'] = [string]$type  # IMachineExtensionUpdate's Type; not the resource type
        }
    }
    if (-not $Patch) {
        $status = [ordered]@{}
        foreach ($pair in @(@('StatusCode', 'code'), @('StatusDisplayStatus', 'displayStatus'), @('StatusLevel', 'level'), @('StatusMessage', 'message'), @('StatusTime', 'time'))) {
            $value = & $read @($pair[0])
            if ($null -ne $value) { $status[$pair[1]] = if ($value -is [datetime]) { $value.ToUniversalTime().ToString('o') } else { $value } }
        }
        $view = [ordered]@{}
        foreach ($pair in @(@('InstanceViewName', 'name'), @('InstanceViewType', 'type'), @('InstanceViewTypeHandlerVersion', 'typeHandlerVersion'))) {
            $value = & $read @($pair[0])
            if ($null -ne $value) { $view[$pair[1]] = $value }
        }
        if ($status.Count -gt 0) { $view['status'] = $status }
        if ($view.Count -gt 0) { $properties['instanceView'] = $view }
    }

    $body = [ordered]@{}
    if (-not $Patch) {
        $location = & $read @('Location')
        if ($location) { $body['location'] = [string]$location }
    }
    $tags = & $read @('Tag', 'Tags')
    if ($null -ne $tags) { $body['tags'] = & $toTable $tags }
    $body['properties'] = $properties
    $body
}
