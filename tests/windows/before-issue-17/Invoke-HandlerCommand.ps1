# arcext agent operation: run one handler command (install, enable, disable, update, uninstall) of
# one extension version, as the VM-extension handler protocol defines it: the command line comes from
# HandlerManifest.json, the WALA environment variables are set, the process is killed after
# TimeoutSeconds. The step is journalled in C:\ProgramData\arcext\journal\<handler>.json before and
# after it runs, so a caller that lost its connection gets the recorded result instead of a second run.
param(
    [Parameter(Mandatory = $true)][string]$Handler,
    [Parameter(Mandatory = $true)][string]$Version,
    [Parameter(Mandatory = $true)][ValidateSet('install', 'enable', 'disable', 'update', 'uninstall')][string]$Command,
    [Parameter(Mandatory = $true)][int]$TimeoutSeconds,
    [Parameter(Mandatory = $true)][string]$OperationId,
    [Parameter(Mandatory = $true)][string]$Step,
    [hashtable]$Environment
)
$ErrorActionPreference = 'Stop'

$dir = Join-Path (Join-Path 'C:\Packages\Plugins' $Handler) $Version
$stateFile = Join-Path $dir 'HandlerState'
$journalDir = 'C:\ProgramData\arcext\journal'
$journalPath = Join-Path $journalDir "$Handler.json"
New-Item -ItemType Directory -Path $journalDir -Force | Out-Null

function Save-Journal($journal) {
    $tmp = "$journalPath.tmp"
    ConvertTo-Json -InputObject $journal -Depth 8 -Compress | Set-Content -LiteralPath $tmp -Encoding UTF8
    Move-Item -LiteralPath $tmp -Destination $journalPath -Force
}

if (-not (Test-Path -LiteralPath $journalPath)) {
    throw "No journal for $Handler; the operation $OperationId was not started."
}
$journal = Get-Content -LiteralPath $journalPath -Raw | ConvertFrom-Json
if ($journal.operationId -ne $OperationId) {
    throw "The active operation on $Handler is $($journal.operationId), not $OperationId."
}
$recorded = $journal.steps.PSObject.Properties[$Step]
if ($recorded -and $recorded.Value.state -eq 'done') {
    $result = $recorded.Value
    $current = 'Removed'
    if (Test-Path -LiteralPath $stateFile) { $current = (Get-Content -LiteralPath $stateFile -Raw).Trim() }
    [pscustomobject]@{
        step = $Step; command = $Command; version = $Version; exitCode = $result.exitCode
        timedOut = $result.timedOut; durationMs = $result.durationMs; replayed = $true
        state = $current; stdoutTail = ''; stderrTail = ''
    } | ConvertTo-Json -Compress
    return
}

$state = (Get-Content -LiteralPath $stateFile -Raw).Trim()
$allowed = @{
    install   = @('NotInstalled')
    enable    = @('Installed', 'Enabled')
    disable   = @('Enabled', 'Installed')
    update    = @('NotInstalled')
    uninstall = @('Installed', 'FailedUpgrade', 'NotInstalled')
}
if ($allowed[$Command] -notcontains $state) {
    throw "Cannot run $Command on $Handler $Version in handler state $state."
}
$manifest = @(Get-Content -LiteralPath (Join-Path $dir 'HandlerManifest.json') -Raw | ConvertFrom-Json)[0].handlerManifest
$commandLine = $manifest."$($Command)Command"
if (-not $commandLine) {
    throw "HandlerManifest.json of $Handler $Version has no $($Command)Command."
}

$journal.steps | Add-Member -NotePropertyName $Step -NotePropertyValue ([pscustomobject]@{ state = 'started'; command = $Command; version = $Version }) -Force
Save-Journal $journal

$info = [System.Diagnostics.ProcessStartInfo]::new('cmd.exe', "/c $commandLine")
$info.WorkingDirectory = $dir
$info.UseShellExecute = $false
$info.RedirectStandardOutput = $true
$info.RedirectStandardError = $true
$info.EnvironmentVariables['AZURE_GUEST_AGENT_EXTENSION_PATH'] = $dir
$info.EnvironmentVariables['AZURE_GUEST_AGENT_EXTENSION_VERSION'] = $Version
if ($Environment) {
    foreach ($key in $Environment.Keys) { $info.EnvironmentVariables[[string]$key] = [string]$Environment[$key] }
}
$watch = [System.Diagnostics.Stopwatch]::StartNew()
$process = [System.Diagnostics.Process]::Start($info)
$stdoutTask = $process.StandardOutput.ReadToEndAsync()
$stderrTask = $process.StandardError.ReadToEndAsync()
$timedOut = -not $process.WaitForExit($TimeoutSeconds * 1000)
if ($timedOut) {
    $process.Kill($true)
    $process.WaitForExit()
    $exitCode = 1011
} else {
    $exitCode = $process.ExitCode
}
$stdout = $stdoutTask.Result
$stderr = $stderrTask.Result
$duration = $watch.ElapsedMilliseconds

if ($exitCode -eq 0) {
    $next = @{ install = 'Installed'; enable = 'Enabled'; disable = 'Installed'; uninstall = 'NotInstalled'; update = $state }[$Command]
    if ($Command -eq 'update' -and $manifest.updateMode -eq 'UpdateWithoutInstall') { $next = 'Installed' }
} elseif ($Command -eq 'update') {
    $next = 'FailedUpgrade'
} else {
    $next = $state
}
Set-Content -LiteralPath $stateFile -Value $next -Encoding ASCII

$journal = Get-Content -LiteralPath $journalPath -Raw | ConvertFrom-Json
$journal.steps | Add-Member -NotePropertyName $Step -NotePropertyValue ([pscustomobject]@{
    state = 'done'; command = $Command; version = $Version; exitCode = $exitCode; timedOut = $timedOut; durationMs = $duration
}) -Force
Save-Journal $journal

function Get-Tail([string]$text) { if ($text.Length -gt 2048) { $text.Substring($text.Length - 2048) } else { $text } }
[pscustomobject]@{
    step = $Step; command = $Command; version = $Version; exitCode = $exitCode; timedOut = $timedOut
    durationMs = $duration; replayed = $false; state = $next
    stdoutTail = (Get-Tail $stdout); stderrTail = (Get-Tail $stderr)
} | ConvertTo-Json -Compress
