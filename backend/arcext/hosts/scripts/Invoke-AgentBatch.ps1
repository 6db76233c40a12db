# arcext batch (psrp): run several agent scripts in ONE pipeline, so that a run of steps costs one
# WS-Management command instead of one each. Scripts: the agent scripts' texts by name (the driver
# sends the project's own files); CallsJson: a JSON list of {"script", "parameters"}. Each script runs
# in order, in its own child scope (nothing it defines outlives it), with its parameters splatted,
# every stream captured; the first one that reports an error ends the batch (the later ones never
# run). Writes one JSON document {"outputs": [[...] per script that ran], "errors": [...]}; the
# driver raises on any error and reads each script's own JSON document from its outputs.
param(
    [Parameter(Mandatory = $true)][hashtable]$Scripts,
    [Parameter(Mandatory = $true)][string]$CallsJson
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$outputs = @()
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
    $calls = $CallsJson | ConvertFrom-Json
    foreach ($call in $calls) {
        $name = [string]$call.script
        if ($name -notmatch '^[A-Za-z]+-[A-Za-z]+$' -or -not $Scripts.ContainsKey($name)) {
            throw "The batch has no agent script '$name'."
        }
        if ($name -eq 'Invoke-AgentBatch' -or $name -eq 'Invoke-HandlerRunner') { throw "$name cannot run in a batch." }
        $params = @{}
        if ($null -ne $call.parameters) { $params = ConvertTo-Hashtable $call.parameters }
        $block = [scriptblock]::Create([string]$Scripts[$name])
        $out = @()
        foreach ($item in (& $block @params *>&1)) {
            if ($item -is [System.Management.Automation.ErrorRecord]) { $errors += $item.ToString() }
            elseif ($item -is [System.Management.Automation.InformationalRecord]) { continue }  # warning, verbose, debug
            elseif ($item -isnot [System.Management.Automation.InformationRecord]) { $out += [string]$item }
        }
        $outputs += , $out
        if ($errors.Count -gt 0) { break }
    }
} catch {
    $errors += $_.ToString()
}
[ordered]@{ outputs = $outputs; errors = $errors } | ConvertTo-Json -Compress -Depth 4
