# arcext common block: the helpers every agent script uses (path confinement, protected folders,
# UTF-8 reads and writes, atomic replace, the per-handler lock, process-tree kill, link-safe tree
# removal). This file is never sent alone: arcext.hosts.agent_scripts composes it into each script
# in place of the line "# --- arcext common block: AgentCommon.ps1 ---", so each script still defines
# the helpers in its own scope, and the composed text is what the drivers send, upload and hash.
# --- arcext common block (AgentCommon.ps1; composed into every agent script that includes it) ---
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
function Remove-Tree([string]$Path) {
    # removes a folder and all in it (a half-extracted package, a removed version): 5.1's
    # Remove-Item -Recurse follows a junction into its target; this removes links themselves, never followed
    foreach ($entry in [System.IO.Directory]::GetFileSystemEntries($Path)) {
        $attributes = [System.IO.File]::GetAttributes($entry)
        if ($attributes -band [System.IO.FileAttributes]::ReparsePoint) {
            if ($attributes -band [System.IO.FileAttributes]::Directory) {
                [System.IO.Directory]::Delete($entry, $false)
            } else {
                [System.IO.File]::Delete($entry)
            }
        } elseif ($attributes -band [System.IO.FileAttributes]::Directory) {
            Remove-Tree $entry
        } else {
            [System.IO.File]::SetAttributes($entry, [System.IO.FileAttributes]::Normal)
            [System.IO.File]::Delete($entry)
        }
    }
    [System.IO.Directory]::Delete($Path, $false)
}
# --- end of the arcext common block ---
