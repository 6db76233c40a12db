# arcext handler task (not sent as a pipeline: Invoke-HandlerCommand.ps1 writes it to
# $env:ProgramData\arcext\scripts and a scheduled task runs it as LocalSystem with Windows
# PowerShell 5.1). Runs one handler command as the VM-extension handler protocol defines it: the
# command line from HandlerManifest.json through `cmd.exe /d /s /c` (no AutoRun; a bare .ps1 runs
# in powershell.exe, not in its associated editor), the WALA environment variables set, output
# redirected to files (a daemon that keeps them open blocks nothing), the process tree killed after
# the timeout. Writes the next handler state and the step's outcome in the journal.
param(
    [Parameter(Mandatory = $true)][string]$RequestPath
)
$ErrorActionPreference = 'Stop'
# --- arcext common block: AgentCommon.ps1 ---

function Read-Tail([string]$Path) {
    # the last 2 KiB of a handler's output: UTF-8 if it is valid UTF-8, else the OEM code page
    if (-not [System.IO.File]::Exists($Path)) { return '' }
    $share = [System.IO.FileShare]::ReadWrite -bor [System.IO.FileShare]::Delete
    $file = New-Object System.IO.FileStream($Path, [System.IO.FileMode]::Open, [System.IO.FileAccess]::Read, $share)
    try {
        $count = [int][Math]::Min($file.Length, 8192)
        $null = $file.Seek(-$count, [System.IO.SeekOrigin]::End)
        $buffer = New-Object byte[] $count
        $read = $file.Read($buffer, 0, $count)
    } finally {
        $file.Dispose()
    }
    $start = 0
    while ($start -lt $read -and $start -lt 3 -and ($buffer[$start] -band 0xC0) -eq 0x80) { $start++ }
    try {
        $text = (New-Object System.Text.UTF8Encoding($false, $true)).GetString($buffer, $start, $read - $start)
    } catch {
        $oem = [System.Globalization.CultureInfo]::CurrentCulture.TextInfo.OEMCodePage
        $text = [System.Text.Encoding]::GetEncoding($oem).GetString($buffer, 0, $read)
    }
    if ($text.Length -gt 2048) { $text = $text.Substring($text.Length - 2048) }
    $text
}

$tasksDir = Resolve-ConfinedPath $StateRoot @('tasks')
$RequestPath = [System.IO.Path]::GetFullPath($RequestPath)
if (-not $RequestPath.StartsWith($tasksDir + '\', [System.StringComparison]::OrdinalIgnoreCase)) {
    throw "Refusing the request ${RequestPath}: it is not in $tasksDir."
}
$request = Read-JsonFile $RequestPath
$handler = [string]$request.handler
$version = [string]$request.version
$step = [string]$request.step
if ($handler -notmatch $NamePattern -or $version -notmatch '^\d{1,9}(\.\d{1,9}){0,3}$' -or $step -notmatch $NamePattern) {
    throw "Refusing the request ${RequestPath}: invalid handler, version or step."
}
$dir = Resolve-ConfinedPath $PluginsRoot @($handler, $version)
$journalPath = Resolve-ConfinedPath $StateRoot @('journal', "$handler.json")
$outPath = Resolve-ConfinedPath $StateRoot @('tasks', "$handler.$step.stdout")
$errPath = Resolve-ConfinedPath $StateRoot @('tasks', "$handler.$step.stderr")
$timeoutMs = [int]$request.timeoutSeconds * 1000

$watch = [System.Diagnostics.Stopwatch]::StartNew()
$exitCode = -1
$timedOut = $false
$failure = ''
try {
    $commandLine = ([string]$request.commandLine).Trim()
    if (($commandLine -split '\s+', 2)[0].Trim('"') -match '\.ps1$') {
        # cmd.exe would open a bare .ps1 in its associated program (an editor); run it in PowerShell
        $commandLine = 'powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File ' + $commandLine
    }
    $info = New-Object System.Diagnostics.ProcessStartInfo
    $info.FileName = Join-Path $env:SystemRoot 'System32\cmd.exe'
    $info.Arguments = '/d /s /c "' + $commandLine + ' 1>"' + $outPath + '" 2>"' + $errPath + '""'
    $info.WorkingDirectory = $dir
    $info.UseShellExecute = $false
    $info.CreateNoWindow = $true
    $info.EnvironmentVariables['AZURE_GUEST_AGENT_EXTENSION_PATH'] = $dir
    $info.EnvironmentVariables['AZURE_GUEST_AGENT_EXTENSION_VERSION'] = $version
    if ($request.environment) {
        foreach ($variable in $request.environment.PSObject.Properties) {
            $info.EnvironmentVariables[$variable.Name] = [string]$variable.Value
        }
    }
    $process = [System.Diagnostics.Process]::Start($info)
    $lock = Enter-HandlerLock $handler
    try {
        $journal = Read-JsonFile $journalPath
        $running = $journal.steps.PSObject.Properties[$step]
        if ($running) {
            $running.Value | Add-Member -NotePropertyName processId -NotePropertyValue $process.Id -Force
            Write-TextFile $journalPath (ConvertTo-Json -InputObject $journal -Depth 8 -Compress)
        }
    } finally {
        Exit-HandlerLock $lock
    }
    if ($process.WaitForExit($timeoutMs)) {
        $process.WaitForExit()
        $exitCode = $process.ExitCode
    } else {
        $timedOut = $true
        $exitCode = 1011
        # the whole tree (cmd.exe and what it started); Kill() without arguments is the only
        # overload .NET Framework has, and it would leave the children running
        Stop-ProcessTree $process.Id
        if (-not $process.WaitForExit(10000)) { $process.Kill() }
    }
} catch {
    $failure = "arcext could not run the handler command: $($_.Exception.Message)"
}
$duration = $watch.ElapsedMilliseconds

$stateBefore = [string]$request.stateBefore
$command = [string]$request.command
if ($exitCode -eq 0) {
    $next = @{ install = 'Installed'; enable = 'Enabled'; disable = 'Installed'; uninstall = 'NotInstalled'; update = $stateBefore }[$command]
    if ($command -eq 'update' -and [string]$request.updateMode -eq 'UpdateWithoutInstall') { $next = 'Installed' }
} elseif ($command -eq 'update') {
    $next = 'FailedUpgrade'
} else {
    $next = $stateBefore
}
$stderrTail = Read-Tail $errPath
if ($failure) { $stderrTail = $failure }
$lock = Enter-HandlerLock $handler
try {
    if (Test-Path -LiteralPath $dir) { Write-TextFile (Join-Path $dir 'HandlerState') $next }
    $journal = Read-JsonFile $journalPath
    if ($journal.operationId -eq $request.operationId) {
        $journal.steps | Add-Member -NotePropertyName $step -Force -NotePropertyValue ([pscustomobject]@{
                state = 'done'; command = $command; version = $version; exitCode = $exitCode; timedOut = $timedOut
                durationMs = $duration; stdoutTail = (Read-Tail $outPath); stderrTail = $stderrTail
            })
        Write-TextFile $journalPath (ConvertTo-Json -InputObject $journal -Depth 8 -Compress)
    }
} finally {
    Exit-HandlerLock $lock
}
foreach ($path in $outPath, $errPath) { if ([System.IO.File]::Exists($path)) { [System.IO.File]::Delete($path) } }
[pscustomobject]@{ step = $step; exitCode = $exitCode; timedOut = $timedOut } | ConvertTo-Json -Compress
