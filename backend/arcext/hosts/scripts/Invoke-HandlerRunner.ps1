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
# --- arcext common block (identical in every agent script; tests/test_ps1_static.py checks it) ---
$ProgressPreference = 'SilentlyContinue'
$PluginsRoot = Join-Path $env:SystemDrive 'Packages\Plugins'
$StateRoot = Join-Path $env:ProgramData 'arcext'
$Utf8NoBom = New-Object System.Text.UTF8Encoding($false)
$NamePattern = '^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$'

function Resolve-ConfinedPath([string]$Root, [string[]]$Parts) {
    # Root\Part1\Part2..., each part one plain name; refuses anything that leaves Root, a reparse
    # point on the way, and paths Windows PowerShell 5.1 cannot handle (MAX_PATH)
    $base = [System.IO.Path]::GetFullPath($Root).TrimEnd('\')
    $path = $base
    foreach ($part in $Parts) {
        if ($part -notmatch $NamePattern -or $part.Length -gt 128) {
            throw "Refusing the path component '$part' under ${base}: not a plain name."
        }
        $path = $path + '\' + $part
        if ((Test-Path -LiteralPath $path) -and
            ((Get-Item -LiteralPath $path -Force).Attributes -band [System.IO.FileAttributes]::ReparsePoint)) {
            throw "Refusing ${path}: it is a junction or symbolic link."
        }
    }
    $full = [System.IO.Path]::GetFullPath($path)
    if (-not $full.StartsWith($base + '\', [System.StringComparison]::OrdinalIgnoreCase)) {
        throw "Refusing ${full}: it is not under $base."
    }
    if ($full.Length -ge 248) { throw "Refusing ${full}: longer than the 248 characters 5.1 allows a folder." }
    $full
}

function New-ProtectedDirectory([string]$Path, [switch]$Inherit, [switch]$KeepExisting) {
    # creates the folder (or takes over one that exists) with an ACL that only SYSTEM and
    # Administrators can write, so local users cannot plant files or links in it. -Inherit: a new
    # folder inside a protected one keeps the inherited ACL; -KeepExisting: an existing folder
    # (C:\Packages\Plugins, shared with Azure's own agent) keeps its ACL.
    if (Test-Path -LiteralPath $Path) {
        $item = Get-Item -LiteralPath $Path -Force
        if (-not $item.PSIsContainer -or ($item.Attributes -band [System.IO.FileAttributes]::ReparsePoint)) {
            throw "Refusing ${Path}: it is a link or not a folder."
        }
        if ($KeepExisting -or $Inherit -or (Get-Acl -LiteralPath $Path).AreAccessRulesProtected) { return }
    } else {
        $null = New-Item -ItemType Directory -Path $Path -Force
        if ($Inherit) { return }
    }
    $acl = New-Object System.Security.AccessControl.DirectorySecurity
    $acl.SetAccessRuleProtection($true, $false)
    $admins = New-Object System.Security.Principal.SecurityIdentifier('S-1-5-32-544')
    $acl.SetOwner($admins)
    foreach ($sid in 'S-1-5-18', 'S-1-5-32-544') {
        $rule = New-Object System.Security.AccessControl.FileSystemAccessRule(
            (New-Object System.Security.Principal.SecurityIdentifier($sid)), 'FullControl',
            'ContainerInherit, ObjectInherit', 'None', 'Allow')
        $acl.AddAccessRule($rule)
    }
    Set-Acl -LiteralPath $Path -AclObject $acl
}

function Read-TextFile([string]$Path) {
    # UTF-8 on 5.1 and 7 alike (a BOM is recognised and dropped); '' for an empty file
    [System.IO.File]::ReadAllText($Path, [System.Text.Encoding]::UTF8)
}

function Read-JsonFile([string]$Path, [switch]$First) {
    # $null for an empty (or not yet written) file; with -First the first element of a JSON list
    # (5.1's ConvertFrom-Json returns a list as one object, 7's enumerates it)
    $text = Read-TextFile $Path
    if ([string]::IsNullOrWhiteSpace($text)) { return $null }
    $value = ConvertFrom-Json -InputObject $text
    if ($First -and ($value -is [System.Array])) {
        if ($value.Count -eq 0) { return $null }
        return $value[0]
    }
    return $value
}

function Write-FileAtomic([string]$Path, [byte[]]$Bytes) {
    # a uniquely named temporary file, then [IO.File]::Replace (one rename; never delete-then-rename)
    $tmp = "$Path.$([guid]::NewGuid().ToString('N')).tmp"
    [System.IO.File]::WriteAllBytes($tmp, $Bytes)
    try {
        if ([System.IO.File]::Exists($Path)) {
            [System.IO.File]::Replace($tmp, $Path, [NullString]::Value)
        } else {
            [System.IO.File]::Move($tmp, $Path)
        }
    } finally {
        if ([System.IO.File]::Exists($tmp)) { [System.IO.File]::Delete($tmp) }
    }
}

function Write-TextFile([string]$Path, [string]$Text) {
    Write-FileAtomic $Path ($Utf8NoBom.GetBytes($Text))
}

function Enter-HandlerLock([string]$Handler) {
    # one writer of a handler's journal and state at a time, across sessions, editions and the
    # handler task: a lock file in the protected journal folder, opened exclusively (the lock goes
    # when the file is closed, also when its holder dies)
    $path = Resolve-ConfinedPath $StateRoot @('journal', "$Handler.lock")
    $deadline = [DateTime]::UtcNow.AddSeconds(60)
    while ($true) {
        try {
            return New-Object System.IO.FileStream($path, [System.IO.FileMode]::OpenOrCreate,
                [System.IO.FileAccess]::ReadWrite, [System.IO.FileShare]::None)
        } catch {
            if (-not ($_.Exception.GetBaseException() -is [System.IO.IOException])) { throw }
            if ([DateTime]::UtcNow -gt $deadline) { throw "Another arcext operation holds $Handler; try again." }
            Start-Sleep -Milliseconds 100
        }
    }
}

function Exit-HandlerLock($Lock) {
    $Lock.Dispose()
}
function Stop-ProcessTree([int]$Id) {
    # taskkill /T /F: the process and everything it started. Started as a process, not with the call
    # operator: 5.1 turns a native command's stderr ("not found") into a terminating error under
    # $ErrorActionPreference = 'Stop'. The exit code is ignored (the tree may be gone already).
    $kill = New-Object System.Diagnostics.ProcessStartInfo((Join-Path $env:SystemRoot 'System32\taskkill.exe'), "/T /F /PID $Id")
    $kill.UseShellExecute = $false
    $kill.CreateNoWindow = $true
    $killer = [System.Diagnostics.Process]::Start($kill)
    $null = $killer.WaitForExit(30000)
}
# --- end of the arcext common block ---

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
