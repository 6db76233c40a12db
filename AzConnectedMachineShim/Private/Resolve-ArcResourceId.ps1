function Resolve-ArcResourceId {
    <#
    .SYNOPSIS
        Splits a HybridCompute machine or machine-extension resource id into its parts.
    .DESCRIPTION
        Returns @{ SubscriptionId; ResourceGroupName; MachineName; ExtensionName } (ExtensionName is $null for
        a machine id), the way Az.ConnectedMachine computes ResourceGroupName and MachineName from Id. An id
        that is not a machine or extension id returns $null. Only parses: it never builds a request path.
    .EXAMPLE
        Resolve-ArcResourceId -Id '/subscriptions/0000/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/m1/extensions/ama'
    #>
    [CmdletBinding()]
    [OutputType([hashtable])]
    param(
        [Parameter(Mandatory)]
        [AllowNull()]
        [AllowEmptyString()]
        [string] $Id
    )

    $pattern = '^/subscriptions/(?<sub>[^/]+)/resourceGroups/(?<rg>[^/]+)/providers/Microsoft\.HybridCompute/machines/(?<machine>[^/]+)(?:/extensions/(?<ext>[^/]+))?/?$'
    $match = [regex]::Match([string]$Id, $pattern, [System.Text.RegularExpressions.RegexOptions]::IgnoreCase)
    if (-not $match.Success) {
        return $null
    }
    @{
        SubscriptionId    = [uri]::UnescapeDataString($match.Groups['sub'].Value)
        ResourceGroupName = [uri]::UnescapeDataString($match.Groups['rg'].Value)
        MachineName       = [uri]::UnescapeDataString($match.Groups['machine'].Value)
        ExtensionName     = if ($match.Groups['ext'].Success) { [uri]::UnescapeDataString($match.Groups['ext'].Value) } else { $null }
    }
}
