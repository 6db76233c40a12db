# arcext WinRS wrapper (sent as -EncodedCommand; keep it small). stdin line 1: {"script", "sha256",
# "parameters"}; any further lines are the script's pipeline input. Runs the uploaded agent script
# from the bytes whose SHA-256 it checked, parameters splatted, and writes one JSON envelope
# {"output": [...], "errors": [...]} to stdout; exit code 1 when there is any error.
param(
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$output = @()
$errors = @()
function ConvertTo-Hashtable($value) {
    if ($value -is [System.Management.Automation.PSCustomObject]) {
        $table = @{}
        foreach ($p in $value.PSObject.Properties) { $table[$p.Name] = ConvertTo-Hashtable $p.Value }
        return $table
    }
    return $value
}
try {
    $lines = @($input)
    $header = $lines[0] | ConvertFrom-Json
    $name = [string]$header.script
    if ($name -notmatch '^[A-Za-z]+-[A-Za-z]+$') { throw "Invalid agent script name '$name'." }
    $path = Join-Path $env:ProgramData "arcext\scripts\$name.ps1"
    if (-not (Test-Path -LiteralPath $path)) { throw "The agent script $name is not installed." }
    $bytes = [System.IO.File]::ReadAllBytes($path)
    $sha = [System.Security.Cryptography.SHA256]::Create()
    $hash = [System.BitConverter]::ToString($sha.ComputeHash($bytes)).Replace('-', '').ToLowerInvariant()
    if ($hash -ne $header.sha256) { throw "The agent script $name has SHA-256 $hash, not $($header.sha256)." }
    $params = @{}
    if ($null -ne $header.parameters) { $params = ConvertTo-Hashtable $header.parameters }
    $script = [scriptblock]::Create([System.Text.Encoding]::UTF8.GetString($bytes))
    if ($lines.Count -gt 1) {
        $items = $lines[1..($lines.Count - 1)] | & $script @params *>&1
    } else {
        $items = & $script @params *>&1
    }
    foreach ($item in $items) {
        if ($item -is [System.Management.Automation.ErrorRecord]) { $errors += $item.ToString() }
        elseif ($item -is [System.Management.Automation.InformationalRecord]) { continue }  # warning, verbose, debug
        elseif ($item -isnot [System.Management.Automation.InformationRecord]) { $output += [string]$item }
    }
} catch {
    $errors += $_.ToString()
}
[Console]::Out.Write(([ordered]@{ output = $output; errors = $errors } | ConvertTo-Json -Compress))
exit [int]($errors.Count -gt 0)
