# arcext agent operation: start one handler command (install, enable, disable, update, uninstall) of
# one extension version, or report on it. The command runs as LocalSystem in a scheduled task
# (\arcext\<handler>.<step>), detached from this remoting session: closing the session, or losing
# it, neither kills the handler nor whatever `enable` leaves running. The task runs
# Invoke-HandlerRunner.ps1 (Windows PowerShell 5.1), which enforces TimeoutSeconds on the host and
# records the outcome (exit code, timed out, output tails, the next handler state) in the step of
# the handler's journal ($env:ProgramData\arcext\journal\<handler>.json). The caller calls again
# with the same parameters until the answer is no longer `pending`; a step already done is
# reported from the journal and never run twice. WaitSeconds: wait on the host (polling the journal)
# up to that long for the outcome before answering, so one call usually starts and reports a step.
# After: the step of this operation that must have succeeded (or been skipped) first; otherwise the
# answer is `skipped` with `blocked`, nothing is started (several steps can then share one
# pipeline). OnlyInState: skip the step (recorded as skipped in the journal) unless the version is
# in that handler state when it would start.
param(
    [Parameter(Mandatory = $true)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+$')][string]$Handler,
    [Parameter(Mandatory = $true)][ValidatePattern('^\d{1,9}(\.\d{1,9}){0,3}$')][string]$Version,
    [Parameter(Mandatory = $true)][ValidateSet('install', 'enable', 'disable', 'update', 'uninstall')][string]$Command,
    [Parameter(Mandatory = $true)][ValidateRange(1, 86400)][int]$TimeoutSeconds,
    [Parameter(Mandatory = $true)][ValidatePattern('^[0-9a-fA-F-]{36}$')][string]$OperationId,
    [Parameter(Mandatory = $true)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$')][string]$Step,
    [Parameter(Mandatory = $true)][string]$RunnerScript,
    [hashtable]$Environment,
    [ValidateRange(0, 3600)][int]$WaitSeconds = 0,
    [ValidatePattern('^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$')][string]$After,
    [ValidateSet('NotInstalled', 'Installed', 'Enabled')][string]$OnlyInState
)
$ErrorActionPreference = 'Stop'
# --- arcext common block: AgentCommon.ps1 ---

$dir = Resolve-ConfinedPath $PluginsRoot @($Handler, $Version)
$stateFile = Join-Path $dir 'HandlerState'
New-ProtectedDirectory $StateRoot
foreach ($sub in 'journal', 'tasks', 'scripts') { New-ProtectedDirectory (Resolve-ConfinedPath $StateRoot @($sub)) -Inherit }
$journalPath = Resolve-ConfinedPath $StateRoot @('journal', "$Handler.json")
$requestPath = Resolve-ConfinedPath $StateRoot @('tasks', "$Handler.$Step.json")
$runnerPath = Resolve-ConfinedPath $StateRoot @('scripts', 'Invoke-HandlerRunner.ps1')
$taskPath = '\arcext\'
$taskName = "$Handler.$Step"
$graceSeconds = 120  # how long past TimeoutSeconds a task may stay silent before it counts as lost

function Get-CurrentState {
    if (Test-Path -LiteralPath $stateFile) {
        $recorded = (Read-TextFile $stateFile).Trim()
        if ($recorded) { return $recorded }
        return 'NotInstalled'
    }
    return 'Removed'
}

function Format-Outcome($Record, [bool]$Replayed) {
    [pscustomobject]@{
        step = $Step; command = $Command; version = $Version; pending = $false
        exitCode = $Record.exitCode; timedOut = $Record.timedOut; durationMs = $Record.durationMs
        replayed = $Replayed; state = (Get-CurrentState); runAs = 'SYSTEM'
        stdoutTail = [string]$Record.stdoutTail; stderrTail = [string]$Record.stderrTail
    } | ConvertTo-Json -Compress
}

function Save-Step($Journal, $Record) {
    $Journal.steps | Add-Member -NotePropertyName $Step -NotePropertyValue $Record -Force
    Write-TextFile $journalPath (ConvertTo-Json -InputObject $Journal -Depth 8 -Compress)
}

function Remove-HandlerTask {
    $task = Get-ScheduledTask -TaskName $taskName -TaskPath $taskPath -ErrorAction SilentlyContinue
    if ($task) { Unregister-ScheduledTask -TaskName $taskName -TaskPath $taskPath -Confirm:$false }
    if (Test-Path -LiteralPath $requestPath) { [System.IO.File]::Delete($requestPath) }
}

function Format-Skipped([string]$Reason, [bool]$Blocked) {
    [pscustomobject]@{
        step = $Step; command = $Command; version = $Version; pending = $false; skipped = $true
        blocked = $Blocked; reason = $Reason; state = (Get-CurrentState)
    } | ConvertTo-Json -Compress
}

function Invoke-Step {
    # one look at the step: report it from the journal, or start it
    $lock = Enter-HandlerLock $Handler
    try {
        if (-not (Test-Path -LiteralPath $journalPath)) {
            throw "No journal for $Handler; the operation $OperationId was not started."
        }
        $journal = Read-JsonFile $journalPath
        if ($journal.operationId -ne $OperationId) {
            throw "The active operation on $Handler is $($journal.operationId), not $OperationId."
        }
        $recorded = $journal.steps.PSObject.Properties[$Step]
        if ($recorded -and $recorded.Value.state -eq 'skipped') {
            Format-Skipped ([string]$recorded.Value.reason) $false
            return
        }
        if ($recorded -and $recorded.Value.state -eq 'done') {
            $replayed = [bool]$recorded.Value.reported
            if (-not $replayed) {
                Remove-HandlerTask
                $recorded.Value | Add-Member -NotePropertyName reported -NotePropertyValue $true -Force
                Save-Step $journal $recorded.Value
            }
            Format-Outcome $recorded.Value $replayed
            return
        }
        if ($recorded) {
            # started: the task runs (or ran and died without a word); the runner enforces the timeout
            $elapsed = [System.DateTimeOffset]::UtcNow.ToUnixTimeSeconds() - [long]$recorded.Value.startedAtUnix
            if ($elapsed -le [int]$recorded.Value.timeoutSeconds + $graceSeconds) {
                [pscustomobject]@{ step = $Step; command = $Command; version = $Version; pending = $true; state = (Get-CurrentState) } |
                    ConvertTo-Json -Compress
                return
            }
            $task = Get-ScheduledTask -TaskName $taskName -TaskPath $taskPath -ErrorAction SilentlyContinue
            if ($task) { Stop-ScheduledTask -TaskName $taskName -TaskPath $taskPath }
            if ($recorded.Value.processId) {
                Stop-ProcessTree ([int]$recorded.Value.processId)
            }
            $record = [pscustomobject]@{
                state = 'done'; command = $Command; version = $Version; exitCode = 1011; timedOut = $true
                durationMs = [int]($elapsed * 1000); stdoutTail = ''; stderrTail = 'the handler task did not report; it was stopped'
                reported = $true
            }
            Save-Step $journal $record
            Remove-HandlerTask
            Format-Outcome $record $false
            return
        }

        if ($After) {
            $previous = $journal.steps.PSObject.Properties[$After]
            if (-not $previous -or ($previous.Value.state -ne 'skipped' -and ($previous.Value.state -ne 'done' -or
                        [int]$previous.Value.exitCode -ne 0 -or [bool]$previous.Value.timedOut))) {
                Format-Skipped "the step $After before it has not succeeded" $true
                return
            }
        }
        $state = Get-CurrentState
        if ($OnlyInState -and $state -ne $OnlyInState) {
            $reason = "$Handler $Version is $state, not $OnlyInState"
            Save-Step $journal ([pscustomobject]@{ state = 'skipped'; command = $Command; version = $Version; reason = $reason })
            Format-Skipped $reason $false
            return
        }
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
        $manifest = (Read-JsonFile (Join-Path $dir 'HandlerManifest.json') -First).handlerManifest
        $commandLine = [string]$manifest."$($Command)Command"
        if (-not $commandLine.Trim()) {
            throw "HandlerManifest.json of $Handler $Version has no $($Command)Command."
        }
        $variables = @{}
        if ($Environment) {
            foreach ($key in $Environment.Keys) {
                if ([string]$key -notmatch '^[A-Za-z_][A-Za-z0-9_]*$') { throw "Invalid environment variable name '$key'." }
                $variables[[string]$key] = [string]$Environment[$key]
            }
        }
        $request = [pscustomobject]@{
            handler = $Handler; version = $Version; command = $Command; step = $Step; operationId = $OperationId
            commandLine = $commandLine; timeoutSeconds = $TimeoutSeconds; stateBefore = $state
            updateMode = [string]$manifest.updateMode; environment = [pscustomobject]$variables
        }
        Write-TextFile $requestPath (ConvertTo-Json -InputObject $request -Depth 4 -Compress)
        if (-not (Test-Path -LiteralPath $runnerPath) -or (Read-TextFile $runnerPath) -cne $RunnerScript) {
            Write-TextFile $runnerPath $RunnerScript
        }
        Save-Step $journal ([pscustomobject]@{
                state = 'started'; command = $Command; version = $Version; timeoutSeconds = $TimeoutSeconds
                startedAtUnix = [System.DateTimeOffset]::UtcNow.ToUnixTimeSeconds()
            })
        $powershell = Join-Path $env:SystemRoot 'System32\WindowsPowerShell\v1.0\powershell.exe'
        $action = New-ScheduledTaskAction -Execute $powershell -WorkingDirectory $dir -Argument (
            "-NoProfile -NonInteractive -ExecutionPolicy Bypass -File `"$runnerPath`" -RequestPath `"$requestPath`"")
        $principal = New-ScheduledTaskPrincipal -UserId 'S-1-5-18' -LogonType ServiceAccount -RunLevel Highest
        $settings = New-ScheduledTaskSettingsSet -ExecutionTimeLimit (New-TimeSpan -Seconds ($TimeoutSeconds + $graceSeconds)) `
            -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries -MultipleInstances IgnoreNew
        $null = Register-ScheduledTask -TaskName $taskName -TaskPath $taskPath -Action $action -Principal $principal `
            -Settings $settings -Force
        Start-ScheduledTask -TaskName $taskName -TaskPath $taskPath
    } finally {
        Exit-HandlerLock $lock
    }

    [pscustomobject]@{ step = $Step; command = $Command; version = $Version; pending = $true; state = $state } |
        ConvertTo-Json -Compress
}

$waitUntil = [System.DateTimeOffset]::UtcNow.ToUnixTimeSeconds() + $WaitSeconds
while ($true) {
    $answer = @(Invoke-Step)[-1] | ConvertFrom-Json  # its last output is the step's JSON document
    if (-not $answer.pending -or [System.DateTimeOffset]::UtcNow.ToUnixTimeSeconds() -ge $waitUntil) { break }
    Start-Sleep -Seconds 1
}
$answer | ConvertTo-Json -Compress
