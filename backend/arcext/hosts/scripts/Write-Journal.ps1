# arcext agent operation: start, update or finish the handler's journal
# ($env:ProgramData\arcext\journal\<handler>.json), replaced atomically under the handler's lock.
# The step results inside it are recorded on the host itself (Invoke-HandlerCommand.ps1 and the
# handler task, Invoke-HandlerRunner.ps1).
param(
    [Parameter(Mandatory = $true)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+$')][string]$Handler,
    [Parameter(Mandatory = $true)][string]$ContentJson
)
$ErrorActionPreference = 'Stop'
# --- arcext common block: AgentCommon.ps1 ---

New-ProtectedDirectory $StateRoot
New-ProtectedDirectory (Resolve-ConfinedPath $StateRoot @('journal')) -Inherit
$journalPath = Resolve-ConfinedPath $StateRoot @('journal', "$Handler.json")
$incoming = ConvertFrom-Json -InputObject $ContentJson
if (-not ($incoming.operationId -match '^[0-9a-fA-F-]{36}$')) { throw 'The journal has no valid operationId.' }
$lock = Enter-HandlerLock $Handler
try {
    if (Test-Path -LiteralPath $journalPath) {
        $current = Read-JsonFile $journalPath
        if ($null -ne $current -and $current.operationId -eq $incoming.operationId) {
            $incoming.steps = $current.steps  # steps belong to the host; the caller only moves the header
        }
    }
    Write-TextFile $journalPath (ConvertTo-Json -InputObject $incoming -Depth 8 -Compress)
} finally {
    Exit-HandlerLock $lock
}

[pscustomobject]@{ operationId = $incoming.operationId; written = $true } | ConvertTo-Json -Compress
