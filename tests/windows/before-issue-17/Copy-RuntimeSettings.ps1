# arcext agent operation: carry the settings from one version to another across an upgrade or a
# rollback: every RuntimeSettings\<N>.settings file is copied byte for byte (same N, same bytes).
param(
    [Parameter(Mandatory = $true)][string]$Handler,
    [Parameter(Mandatory = $true)][string]$FromVersion,
    [Parameter(Mandatory = $true)][string]$ToVersion
)
$ErrorActionPreference = 'Stop'

$root = Join-Path 'C:\Packages\Plugins' $Handler
$source = Join-Path (Join-Path $root $FromVersion) 'RuntimeSettings'
$target = Join-Path (Join-Path $root $ToVersion) 'RuntimeSettings'
if (-not (Test-Path -LiteralPath $source)) {
    throw "No settings to copy: $source does not exist."
}
New-Item -ItemType Directory -Path $target -Force | Out-Null
$copied = @()
foreach ($file in Get-ChildItem -LiteralPath $source -Filter '*.settings') {
    Copy-Item -LiteralPath $file.FullName -Destination (Join-Path $target $file.Name) -Force
    $copied += [pscustomobject]@{
        name   = $file.Name
        sha256 = (Get-FileHash -LiteralPath (Join-Path $target $file.Name) -Algorithm SHA256).Hash.ToLowerInvariant()
    }
}

[pscustomobject]@{ copied = @($copied) } | ConvertTo-Json -Compress -Depth 4
