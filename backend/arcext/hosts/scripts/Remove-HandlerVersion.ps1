# arcext agent operation: remove one version folder of one extension handler
# ($env:SystemDrive\Packages\Plugins\<handler>\<version>, version-shaped names only); with -PurgeCache
# also its cached package (done only once a newer version is healthy, or when the extension is
# deleted). Junctions and symbolic links inside the folder are removed themselves, never followed.
param(
    [Parameter(Mandatory = $true)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+$')][string]$Handler,
    [Parameter(Mandatory = $true)][ValidatePattern('^\d{1,9}(\.\d{1,9}){0,3}$')][string]$Version,
    [switch]$PurgeCache
)
$ErrorActionPreference = 'Stop'
# --- arcext common block: AgentCommon.ps1 ---

$dir = Resolve-ConfinedPath $PluginsRoot @($Handler, $Version)
$removed = Test-Path -LiteralPath $dir
if ($removed) {
    Remove-Tree $dir
}
$purged = $false
if ($PurgeCache) {
    $zip = Resolve-ConfinedPath $StateRoot @('packages', $Handler, "$Version.zip")
    if (Test-Path -LiteralPath $zip) {
        [System.IO.File]::Delete($zip)
        $purged = $true
    }
}

[pscustomobject]@{ removed = $removed; purged = $purged } | ConvertTo-Json -Compress
