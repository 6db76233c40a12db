# arcext agent operation: extract a cached package into C:\Packages\Plugins\<handler>\<version>\
# after checking its SHA-256 again; writes HandlerEnvironment.json and the NotInstalled handler state.
# Idempotent: an already extracted version with the same package hash is left as it is.
param(
    [Parameter(Mandatory = $true)][string]$Handler,
    [Parameter(Mandatory = $true)][string]$Version,
    [Parameter(Mandatory = $true)][string]$Sha256
)
$ErrorActionPreference = 'Stop'

$zip = Join-Path (Join-Path 'C:\ProgramData\arcext\packages' $Handler) "$Version.zip"
$dir = Join-Path (Join-Path 'C:\Packages\Plugins' $Handler) $Version
$marker = Join-Path $dir 'arcext.package.sha256'
if (-not (Test-Path -LiteralPath $zip)) {
    throw "The package $Handler $Version is not in the package cache."
}
$actual = (Get-FileHash -LiteralPath $zip -Algorithm SHA256).Hash.ToLowerInvariant()
if ($actual -ne $Sha256.ToLowerInvariant()) {
    throw "The cached package $Handler $Version has SHA-256 $actual, expected $Sha256."
}
$expanded = $false
if (-not ((Test-Path -LiteralPath $marker) -and ((Get-Content -LiteralPath $marker -Raw).Trim() -eq $actual))) {
    New-Item -ItemType Directory -Path $dir -Force | Out-Null
    Expand-Archive -LiteralPath $zip -DestinationPath $dir -Force
    foreach ($sub in 'RuntimeSettings', 'Status') {
        New-Item -ItemType Directory -Path (Join-Path $dir $sub) -Force | Out-Null
    }
    $logDir = Join-Path (Join-Path 'C:\WindowsAzure\Logs\Plugins' $Handler) $Version
    $environment = @(@{
        version            = '1.0'
        handlerEnvironment = @{
            logFolder        = $logDir
            configFolder     = Join-Path $dir 'RuntimeSettings'
            statusFolder     = Join-Path $dir 'Status'
            heartbeatFile    = Join-Path $dir 'heartbeat.json'
        }
    })
    ConvertTo-Json -InputObject $environment -Depth 5 | Set-Content -LiteralPath (Join-Path $dir 'HandlerEnvironment.json') -Encoding UTF8
    Set-Content -LiteralPath (Join-Path $dir 'HandlerState') -Value 'NotInstalled' -Encoding ASCII
    Set-Content -LiteralPath $marker -Value $actual -Encoding ASCII
    $expanded = $true
}
$manifest = Get-Content -LiteralPath (Join-Path $dir 'HandlerManifest.json') -Raw | ConvertFrom-Json

[pscustomobject]@{
    path            = $dir
    expanded        = $expanded
    handlerManifest = @($manifest)[0].handlerManifest
} | ConvertTo-Json -Compress -Depth 6
