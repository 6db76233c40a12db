function New-ArcExtensionBody {
    <#
    .SYNOPSIS
        Builds the JSON body of an extension PUT (New-/Set-) or PATCH (Update-) from a cmdlet's bound parameters.
    .DESCRIPTION
        Only parameters the caller bound are sent, so a PATCH is a partial update. The switches are sent as
        booleans exactly when given: -EnableAutomaticUpgrade sends true, -EnableAutomaticUpgrade:$false sends
        false, leaving it out sends nothing. -ProtectedSetting goes into the request only (never into output).
        -TypeHandlerVersion is sent in a PATCH too, as Az.ConnectedMachine sends it.
    .EXAMPLE
        $body = New-ArcExtensionBody -BoundParameters $PSBoundParameters -Patch
    #>
    [CmdletBinding()]
    [OutputType([hashtable])]
    param(
        [Parameter(Mandatory)]
        [System.Collections.IDictionary] $BoundParameters,

        # Build a MachineExtensionUpdate (PATCH) instead of a MachineExtension (PUT).
        [switch] $Patch
    )

    # Parameter name -> properties.<name>, for the plain values.
    $propertyMap = [ordered]@{
        Publisher          = 'publisher'
        ExtensionType      = 'type'
        Type               = 'type'
        TypeHandlerVersion = 'typeHandlerVersion'
        ForceRerun         = 'forceUpdateTag'
        Setting            = 'settings'
        ProtectedSetting   = 'protectedSettings'
    }
    $switchMap = [ordered]@{
        EnableAutomaticUpgrade  = 'enableAutomaticUpgrade'
        AutoUpgradeMinorVersion = 'autoUpgradeMinorVersion'
    }

    $properties = [ordered]@{}
    foreach ($name in $propertyMap.Keys) {
        if (-not $BoundParameters.Contains($name)) {
            continue
        }
        $properties[$propertyMap[$name]] = $BoundParameters[$name]
    }
    foreach ($name in $switchMap.Keys) {
        if ($BoundParameters.Contains($name)) {
            $properties[$switchMap[$name]] = [bool]$BoundParameters[$name].IsPresent
        }
    }

    if (-not $Patch) {
        $status = [ordered]@{}
        foreach ($pair in @(
                @('StatusCode', 'code'), @('StatusDisplayStatus', 'displayStatus'), @('StatusLevel', 'level'),
                @('StatusMessage', 'message'), @('StatusTime', 'time'))) {
            if ($BoundParameters.Contains($pair[0])) {
                $value = $BoundParameters[$pair[0]]
                $status[$pair[1]] = if ($value -is [datetime]) { $value.ToUniversalTime().ToString('o') } else { $value }
            }
        }
        $instanceView = [ordered]@{}
        foreach ($pair in @(@('InstanceViewName', 'name'), @('InstanceViewType', 'type'), @('InstanceViewTypeHandlerVersion', 'typeHandlerVersion'))) {
            if ($BoundParameters.Contains($pair[0])) {
                $instanceView[$pair[1]] = $BoundParameters[$pair[0]]
            }
        }
        if ($status.Count -gt 0) {
            $instanceView['status'] = $status
        }
        if ($instanceView.Count -gt 0) {
            $properties['instanceView'] = $instanceView
        }
    }

    $body = [ordered]@{}
    if (-not $Patch) {
        $body['location'] = $BoundParameters['Location']
    }
    if ($BoundParameters.Contains('Tag')) {
        $body['tags'] = $BoundParameters['Tag']
    }
    $body['properties'] = $properties
    $body
}
