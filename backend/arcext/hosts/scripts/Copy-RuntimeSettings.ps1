# arcext agent operation: carry the settings from one version to another across an upgrade or a
# rollback: every RuntimeSettings\<N>.settings file is copied byte for byte (same N, same bytes).
param(
    [Parameter(Mandatory = $true)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+$')][string]$Handler,
    [Parameter(Mandatory = $true)][ValidatePattern('^\d{1,9}(\.\d{1,9}){0,3}$')][string]$FromVersion,
    [Parameter(Mandatory = $true)][ValidatePattern('^\d{1,9}(\.\d{1,9}){0,3}$')][string]$ToVersion
)
$ErrorActionPreference = 'Stop'
# --- arcext common block: AgentCommon.ps1 ---

$source = Resolve-ConfinedPath $PluginsRoot @($Handler, $FromVersion, 'RuntimeSettings')
$target = Resolve-ConfinedPath $PluginsRoot @($Handler, $ToVersion, 'RuntimeSettings')
if (-not (Test-Path -LiteralPath $source)) {
    throw "No settings to copy: $source does not exist."
}
if (-not (Test-Path -LiteralPath (Resolve-ConfinedPath $PluginsRoot @($Handler, $ToVersion)))) {
    throw "$Handler $ToVersion is not staged."
}
New-ProtectedDirectory $target -Inherit
$copied = @()
foreach ($file in Get-ChildItem -LiteralPath $source -Filter '*.settings' -File) {
    if ($file.Name -notmatch '^(?:[A-Za-z0-9_-]+\.)?\d{1,9}\.settings$') { continue }
    $destination = Resolve-ConfinedPath $PluginsRoot @($Handler, $ToVersion, 'RuntimeSettings', $file.Name)
    Write-FileAtomic $destination ([System.IO.File]::ReadAllBytes($file.FullName))
    $copied += [pscustomobject]@{
        name   = $file.Name
        sha256 = (Get-FileHash -LiteralPath $destination -Algorithm SHA256).Hash.ToLowerInvariant()
    }
}

[pscustomobject]@{ copied = @($copied) } | ConvertTo-Json -Compress -Depth 4
