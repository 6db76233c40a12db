# arcext agent operation: what is on disk for one extension handler (read-only).
# Versions under C:\Packages\Plugins\<Publisher>.<Type>\, each with its handler state and the latest
# settings sequence number; packages kept in the arcext cache; the handler's active journal.
param(
    [Parameter(Mandatory = $true)][string]$Handler
)
$ErrorActionPreference = 'Stop'

$pluginDir = Join-Path 'C:\Packages\Plugins' $Handler
$cacheDir = Join-Path 'C:\ProgramData\arcext\packages' $Handler
$journalPath = Join-Path 'C:\ProgramData\arcext\journal' "$Handler.json"

$versions = @()
if (Test-Path -LiteralPath $pluginDir) {
    foreach ($dir in Get-ChildItem -LiteralPath $pluginDir -Directory) {
        $stateFile = Join-Path $dir.FullName 'HandlerState'
        $state = 'NotInstalled'
        if (Test-Path -LiteralPath $stateFile) {
            $state = (Get-Content -LiteralPath $stateFile -Raw).Trim()
        }
        $seq = $null
        $settingsDir = Join-Path $dir.FullName 'RuntimeSettings'
        if (Test-Path -LiteralPath $settingsDir) {
            $numbers = Get-ChildItem -LiteralPath $settingsDir -Filter '*.settings' |
                ForEach-Object { [int]$_.BaseName }
            if ($numbers) { $seq = ($numbers | Measure-Object -Maximum).Maximum }
        }
        $versions += [pscustomobject]@{ version = $dir.Name; state = $state; sequenceNumber = $seq }
    }
}

$cached = @()
if (Test-Path -LiteralPath $cacheDir) {
    $cached = @(Get-ChildItem -LiteralPath $cacheDir -Filter '*.zip' | ForEach-Object { $_.BaseName })
}

$journal = $null
if (Test-Path -LiteralPath $journalPath) {
    $journal = Get-Content -LiteralPath $journalPath -Raw | ConvertFrom-Json
}

[pscustomobject]@{
    handler  = $Handler
    versions = @($versions)
    cached   = @($cached)
    journal  = $journal
} | ConvertTo-Json -Compress -Depth 8
