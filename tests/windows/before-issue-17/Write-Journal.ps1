# arcext agent operation: start, update or finish the handler's journal
# (C:\ProgramData\arcext\journal\<handler>.json), written atomically. The step results inside it are
# recorded by Invoke-HandlerCommand.ps1 on the host itself.
param(
    [Parameter(Mandatory = $true)][string]$Handler,
    [Parameter(Mandatory = $true)][string]$ContentJson
)
$ErrorActionPreference = 'Stop'

$journalDir = 'C:\ProgramData\arcext\journal'
New-Item -ItemType Directory -Path $journalDir -Force | Out-Null
$journalPath = Join-Path $journalDir "$Handler.json"
$incoming = $ContentJson | ConvertFrom-Json
if (Test-Path -LiteralPath $journalPath) {
    $current = Get-Content -LiteralPath $journalPath -Raw | ConvertFrom-Json
    if ($current.operationId -eq $incoming.operationId) {
        $incoming.steps = $current.steps  # steps belong to the host; the caller only moves the header
    }
}
$tmp = "$journalPath.tmp"
ConvertTo-Json -InputObject $incoming -Depth 8 -Compress | Set-Content -LiteralPath $tmp -Encoding UTF8
Move-Item -LiteralPath $tmp -Destination $journalPath -Force

[pscustomobject]@{ operationId = $incoming.operationId; written = $true } | ConvertTo-Json -Compress
