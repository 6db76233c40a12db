# arcext WinRS wrapper (-EncodedCommand, so small; docs/hosts.md). stdin: [{script,sha256,parameters}],
# then the first script's input, streamed. Exit 3: a script missing or changed (nothing ran).
param(
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$outputs = @()
$errors = @()
$code = 1
function ConvertTo-Hashtable($value) {
    if ($value -is [System.Management.Automation.PSCustomObject]) {
        $table = @{}
        foreach ($p in $value.PSObject.Properties) { $table[$p.Name] = ConvertTo-Hashtable $p.Value }
        return $table
    }
    return $value
}
function Read-Stdin { while ($null -ne ($line = [Console]::In.ReadLine())) { $line } }
try {
    $parsed = [Console]::In.ReadLine() | ConvertFrom-Json
    $runs = @()
    foreach ($call in @($parsed)) {
        $name = [string]$call.script
        if ($name -notmatch '^[A-Za-z]+-[A-Za-z]+$') { throw "Invalid agent script name '$name'." }
        $path = Join-Path $env:ProgramData "arcext\scripts\$name.ps1"
        $code = 3
        if (-not (Test-Path -LiteralPath $path)) { throw "The agent script $name is not installed." }
        $bytes = [System.IO.File]::ReadAllBytes($path)
        $sha = [System.Security.Cryptography.SHA256]::Create()
        $hash = [System.BitConverter]::ToString($sha.ComputeHash($bytes)).Replace('-', '').ToLowerInvariant()
        if ($hash -ne $call.sha256) { throw "The agent script $name has SHA-256 $hash, not $($call.sha256)." }
        $code = 1
        $params = @{}
        if ($null -ne $call.parameters) { $params = ConvertTo-Hashtable $call.parameters }
        $runs += , @([scriptblock]::Create([System.Text.Encoding]::UTF8.GetString($bytes)), $params)
    }
    foreach ($run in $runs) {
        $block, $params = $run
        if ($outputs.Count -eq 0) { $items = Read-Stdin | & $block @params *>&1 } else { $items = & $block @params *>&1 }
        $out = @()
        foreach ($item in $items) {
            if ($item -is [System.Management.Automation.ErrorRecord]) { $errors += $item.ToString() }
            elseif ($item -isnot [System.Management.Automation.InformationalRecord] -and
                $item -isnot [System.Management.Automation.InformationRecord]) { $out += [string]$item }
        }
        $outputs += , $out
        if ($errors.Count -gt 0) { break }
    }
} catch {
    $errors += $_.ToString()
}
if ($errors.Count -eq 0) { $code = 0 }
[Console]::Out.Write(([ordered]@{ outputs = $outputs; errors = $errors } | ConvertTo-Json -Compress -Depth 4))
exit $code
