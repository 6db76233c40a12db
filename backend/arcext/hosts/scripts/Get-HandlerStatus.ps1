# arcext agent operation: the health inputs of one extension version: Status\<N>.status (parsed; or
# pending while it is empty; or the reason it cannot be parsed, with its age so that the caller can
# tell a half-written file from a broken one) and the heartbeat file named in
# HandlerEnvironment.json with its age.
param(
    [Parameter(Mandatory = $true)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+$')][string]$Handler,
    [Parameter(Mandatory = $true)][ValidatePattern('^\d{1,9}(\.\d{1,9}){0,3}$')][string]$Version,
    [Parameter(Mandatory = $true)][int]$SequenceNumber
)
$ErrorActionPreference = 'Stop'
# --- arcext common block: AgentCommon.ps1 ---

$dir = Resolve-ConfinedPath $PluginsRoot @($Handler, $Version)
$statusPath = Resolve-ConfinedPath $PluginsRoot @($Handler, $Version, 'Status', "$SequenceNumber.status")
$now = (Get-Date).ToUniversalTime()
$status = $null
$statusError = $null
$statusPending = $null
$statusAge = $null
if (Test-Path -LiteralPath $statusPath) {
    $statusAge = [int]($now - (Get-Item -LiteralPath $statusPath).LastWriteTimeUtc).TotalSeconds
    try {
        $parsed = Read-JsonFile $statusPath -First
        if ($null -eq $parsed) {
            $statusPending = 'the status file is empty'
        } else {
            $status = [pscustomobject]@{
                status  = [string]$parsed.status.status
                code    = [int]$parsed.status.code
                message = [string]$parsed.status.formattedMessage.message
            }
        }
    } catch {
        $statusError = "Status file $statusPath is not valid JSON: $($_.Exception.Message)"
    }
}

$heartbeat = $null
$handlerEnv = Read-JsonFile (Join-Path $dir 'HandlerEnvironment.json') -First
$heartbeatFile = [string]$handlerEnv.handlerEnvironment.heartbeatFile
if ($heartbeatFile) {
    $heartbeatFile = [System.IO.Path]::GetFullPath($heartbeatFile)
    if (-not $heartbeatFile.StartsWith($dir + '\', [System.StringComparison]::OrdinalIgnoreCase)) {
        throw "Refusing the heartbeat file ${heartbeatFile}: it is not under $dir."
    }
}
if ($heartbeatFile -and (Test-Path -LiteralPath $heartbeatFile)) {
    $item = Get-Item -LiteralPath $heartbeatFile
    $beat = $null
    try { $beat = (Read-JsonFile $heartbeatFile -First).heartbeat } catch { $beat = $null }
    if ($null -ne $beat) {
        $heartbeat = [pscustomobject]@{
            status     = [string]$beat.status
            code       = [int]$beat.code
            ageSeconds = [int]($now - $item.LastWriteTimeUtc).TotalSeconds
        }
    }
}

$state = 'NotInstalled'
$stateFile = Join-Path $dir 'HandlerState'
if (Test-Path -LiteralPath $stateFile) {
    $recorded = (Read-TextFile $stateFile).Trim()
    if ($recorded) { $state = $recorded }
}

[pscustomobject]@{
    status           = $status
    statusError      = $statusError
    statusPending    = $statusPending
    statusAgeSeconds = $statusAge
    heartbeat        = $heartbeat
    state            = $state
} | ConvertTo-Json -Compress -Depth 4
