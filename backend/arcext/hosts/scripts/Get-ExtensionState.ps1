# arcext agent operation: what is on disk for one extension handler (read-only).
# Versions under $env:SystemDrive\Packages\Plugins\<Publisher>.<Type>\ (version-shaped folders
# only), each with its handler state and the latest settings sequence number; packages kept in the
# arcext cache; the handler's active journal.
param(
    [Parameter(Mandatory = $true)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+$')][string]$Handler
)
$ErrorActionPreference = 'Stop'
# --- arcext common block: AgentCommon.ps1 ---

$pluginDir = Resolve-ConfinedPath $PluginsRoot @($Handler)
$cacheDir = Resolve-ConfinedPath $StateRoot @('packages', $Handler)
$journalPath = Resolve-ConfinedPath $StateRoot @('journal', "$Handler.json")
$versionPattern = '^\d{1,9}(\.\d{1,9}){0,3}$'

$versions = @()
if (Test-Path -LiteralPath $pluginDir) {
    foreach ($dir in Get-ChildItem -LiteralPath $pluginDir -Directory) {
        if ($dir.Name -notmatch $versionPattern) { continue }
        $stateFile = Join-Path $dir.FullName 'HandlerState'
        $state = 'NotInstalled'
        if (Test-Path -LiteralPath $stateFile) {
            $recorded = (Read-TextFile $stateFile).Trim()
            if ($recorded) { $state = $recorded }
        }
        $seq = $null
        $settingsDir = Join-Path $dir.FullName 'RuntimeSettings'
        if (Test-Path -LiteralPath $settingsDir) {
            foreach ($file in Get-ChildItem -LiteralPath $settingsDir -Filter '*.settings' -File) {
                # <N>.settings, or <extension>.<N>.settings for multi-config handlers; others are ignored
                if ($file.BaseName -match '^(?:[A-Za-z0-9_-]+\.)?(\d{1,9})$') {
                    $number = [int]$Matches[1]
                    if ($null -eq $seq -or $number -gt $seq) { $seq = $number }
                }
            }
        }
        $versions += [pscustomobject]@{ version = $dir.Name; state = $state; sequenceNumber = $seq }
    }
}

$cached = @()
if (Test-Path -LiteralPath $cacheDir) {
    $cached = @(Get-ChildItem -LiteralPath $cacheDir -Filter '*.zip' -File |
            Where-Object { $_.BaseName -match $versionPattern } | ForEach-Object { $_.BaseName })
}

$journal = $null
if (Test-Path -LiteralPath $journalPath) {
    $lock = Enter-HandlerLock $Handler
    try { $journal = Read-JsonFile $journalPath } finally { Exit-HandlerLock $lock }
}

[pscustomobject]@{
    handler  = $Handler
    versions = @($versions)
    cached   = @($cached)
    journal  = $journal
} | ConvertTo-Json -Compress -Depth 8
