# arcext agent operation: the health inputs of one extension version: Status\<N>.status (parsed, or
# the reason it cannot be) and the heartbeat file named in HandlerEnvironment.json with its age.
param(
    [Parameter(Mandatory = $true)][string]$Handler,
    [Parameter(Mandatory = $true)][string]$Version,
    [Parameter(Mandatory = $true)][int]$SequenceNumber
)
$ErrorActionPreference = 'Stop'

$dir = Join-Path (Join-Path 'C:\Packages\Plugins' $Handler) $Version
$statusPath = Join-Path (Join-Path $dir 'Status') "$SequenceNumber.status"
$status = $null
$statusError = $null
if (Test-Path -LiteralPath $statusPath) {
    try {
        $parsed = @(Get-Content -LiteralPath $statusPath -Raw | ConvertFrom-Json)[0]
        $status = [pscustomobject]@{
            status  = [string]$parsed.status.status
            code    = [int]$parsed.status.code
            message = [string]$parsed.status.formattedMessage.message
        }
    } catch {
        $statusError = "Status file $statusPath is not valid JSON: $($_.Exception.Message)"
    }
}

$heartbeat = $null
$environment = @(Get-Content -LiteralPath (Join-Path $dir 'HandlerEnvironment.json') -Raw | ConvertFrom-Json)[0]
$heartbeatFile = $environment.handlerEnvironment.heartbeatFile
if ($heartbeatFile -and (Test-Path -LiteralPath $heartbeatFile)) {
    $item = Get-Item -LiteralPath $heartbeatFile
    $beat = @(Get-Content -LiteralPath $heartbeatFile -Raw | ConvertFrom-Json)[0].heartbeat
    $heartbeat = [pscustomobject]@{
        status     = [string]$beat.status
        code       = [int]$beat.code
        ageSeconds = [int]((Get-Date).ToUniversalTime() - $item.LastWriteTimeUtc).TotalSeconds
    }
}

[pscustomobject]@{
    status      = $status
    statusError = $statusError
    heartbeat   = $heartbeat
    state       = (Get-Content -LiteralPath (Join-Path $dir 'HandlerState') -Raw).Trim()
} | ConvertTo-Json -Compress -Depth 4
