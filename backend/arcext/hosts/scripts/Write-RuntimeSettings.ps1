# arcext agent operation: write RuntimeSettings\<N>.settings for a freshly installed version.
# The content arrives base64 encoded and is written byte for byte (protectedSettings stay encrypted).
param(
    [Parameter(Mandatory = $true)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+$')][string]$Handler,
    [Parameter(Mandatory = $true)][ValidatePattern('^\d{1,9}(\.\d{1,9}){0,3}$')][string]$Version,
    [Parameter(Mandatory = $true)][ValidateRange(0, 2147483647)][int]$SequenceNumber,
    [Parameter(Mandatory = $true)][string]$ContentBase64
)
$ErrorActionPreference = 'Stop'
# --- arcext common block: AgentCommon.ps1 ---

$dir = Resolve-ConfinedPath $PluginsRoot @($Handler, $Version)
if (-not (Test-Path -LiteralPath $dir)) { throw "$Handler $Version is not staged: $dir does not exist." }
$settingsDir = Resolve-ConfinedPath $PluginsRoot @($Handler, $Version, 'RuntimeSettings')
New-ProtectedDirectory $settingsDir -Inherit
$bytes = [System.Convert]::FromBase64String($ContentBase64)
$path = Resolve-ConfinedPath $PluginsRoot @($Handler, $Version, 'RuntimeSettings', "$SequenceNumber.settings")
Write-FileAtomic $path $bytes
$hash = (Get-FileHash -LiteralPath $path -Algorithm SHA256).Hash.ToLowerInvariant()

[pscustomobject]@{ sequenceNumber = $SequenceNumber; sha256 = $hash; size = $bytes.Length } | ConvertTo-Json -Compress
