# arcext agent operation: write RuntimeSettings\<N>.settings for a freshly installed version.
# The content arrives base64 encoded and is written byte for byte (protectedSettings stay encrypted).
param(
    [Parameter(Mandatory = $true)][string]$Handler,
    [Parameter(Mandatory = $true)][string]$Version,
    [Parameter(Mandatory = $true)][int]$SequenceNumber,
    [Parameter(Mandatory = $true)][string]$ContentBase64
)
$ErrorActionPreference = 'Stop'

$settingsDir = Join-Path (Join-Path (Join-Path 'C:\Packages\Plugins' $Handler) $Version) 'RuntimeSettings'
New-Item -ItemType Directory -Path $settingsDir -Force | Out-Null
$bytes = [System.Convert]::FromBase64String($ContentBase64)
$path = Join-Path $settingsDir "$SequenceNumber.settings"
[System.IO.File]::WriteAllBytes($path, $bytes)
$hash = (Get-FileHash -LiteralPath $path -Algorithm SHA256).Hash.ToLowerInvariant()

[pscustomobject]@{ sequenceNumber = $SequenceNumber; sha256 = $hash; size = $bytes.Length } | ConvertTo-Json -Compress
