function Get-ArcValue {
    <#
    .SYNOPSIS
        Reads a dotted path (for example 'properties.instanceView.status.code') out of a parsed JSON body.
    .DESCRIPTION
        Returns $null as soon as a step is missing or is not an object, so converters never fail on an
        optional ARM property.
    .EXAMPLE
        Get-ArcValue -InputObject $resource -Path 'properties.enableAutomaticUpgrade'
    #>
    [CmdletBinding()]
    [OutputType([object])]
    param(
        [Parameter(Mandatory)]
        [AllowNull()]
        [object] $InputObject,

        [Parameter(Mandatory)]
        [string] $Path
    )

    $current = $InputObject
    foreach ($segment in $Path.Split('.')) {
        if ($current -isnot [System.Collections.IDictionary]) {
            return $null
        }
        $current = $current[$segment]
    }
    # Keep arrays whole (a function would otherwise unroll them).
    if ($current -is [array]) {
        return , $current
    }
    $current
}
