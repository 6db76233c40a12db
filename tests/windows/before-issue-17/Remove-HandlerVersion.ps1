# arcext agent operation: remove one extension version's directory; with -PurgeCache also its cached
# package (done only once a newer version is healthy, or when the extension is deleted).
param(
    [Parameter(Mandatory = $true)][string]$Handler,
    [Parameter(Mandatory = $true)][string]$Version,
    [switch]$PurgeCache
)
$ErrorActionPreference = 'Stop'

$dir = Join-Path (Join-Path 'C:\Packages\Plugins' $Handler) $Version
$removed = Test-Path -LiteralPath $dir
if ($removed) {
    Remove-Item -LiteralPath $dir -Recurse -Force
}
$purged = $false
if ($PurgeCache) {
    $zip = Join-Path (Join-Path 'C:\ProgramData\arcext\packages' $Handler) "$Version.zip"
    if (Test-Path -LiteralPath $zip) {
        Remove-Item -LiteralPath $zip -Force
        $purged = $true
    }
}

[pscustomobject]@{ removed = $removed; purged = $purged } | ConvertTo-Json -Compress
