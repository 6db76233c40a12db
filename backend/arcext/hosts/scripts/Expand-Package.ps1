# arcext agent operation: extract a cached package into
# $env:SystemDrive\Packages\Plugins\<handler>\<version>\ and verify the extracted tree against the
# package's own file list before anything uses it; writes HandlerEnvironment.json and the
# NotInstalled handler state. The zip is opened once: the handle that is hashed is the handle that
# is extracted. Entry names are checked again here (no '..', no rooted or drive paths, no streams):
# every file must land inside the version folder. Idempotent: an already extracted version with the
# same package hash is only verified again.
param(
    [Parameter(Mandatory = $true)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+$')][string]$Handler,
    [Parameter(Mandatory = $true)][ValidatePattern('^\d{1,9}(\.\d{1,9}){0,3}$')][string]$Version,
    [Parameter(Mandatory = $true)][ValidatePattern('^[0-9a-fA-F]{64}$')][string]$Sha256,
    [Parameter(Mandatory = $true)][string]$FilesJson
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

$own = @('HandlerEnvironment.json', 'HandlerState', 'arcext.package.sha256')

function Resolve-EntryPath([string]$Root, [string]$Name) {
    # where a zip entry would land; refuses names that could leave Root or that Windows rewrites
    $parts = $Name.Replace('/', '\').Split('\')
    if ($Name.StartsWith('/') -or $Name.StartsWith('\') -or $Name.Contains(':') -or $Name -match '[\x00-\x1f<>"|?*]') {
        throw "Refusing the package entry '$Name': rooted, a drive, a stream or a reserved character."
    }
    foreach ($part in $parts) {
        if ($part -eq '' -or $part -eq '.' -or $part -eq '..' -or $part.EndsWith('.') -or $part.EndsWith(' ')) {
            throw "Refusing the package entry '$Name': the component '$part' is not a plain name."
        }
    }
    if ($parts.Count -eq 1 -and $own -contains $parts[0]) { throw "Refusing the package entry '$Name': arcext writes it." }
    $full = [System.IO.Path]::GetFullPath($Root + '\' + ($parts -join '\'))
    if (-not $full.StartsWith($Root + '\', [System.StringComparison]::OrdinalIgnoreCase)) {
        throw "Refusing the package entry '$Name': it leaves $Root."
    }
    if ($full.Length -ge 260) { throw "Refusing the package entry '$Name': $full is longer than 259 characters." }
    $full
}

function Test-Tree([string]$Root, $Files, [switch]$Exact) {
    # every file of the package present with its SHA-256; with -Exact nothing else but arcext's own
    foreach ($name in $Files.Keys) {
        $path = Resolve-EntryPath $Root $name
        if (-not [System.IO.File]::Exists($path)) { throw "The extracted $Handler $Version lacks '$name'." }
        $hash = (Get-FileHash -LiteralPath $path -Algorithm SHA256).Hash.ToLowerInvariant()
        if ($hash -ne $Files[$name]) { throw "The extracted '$name' of $Handler $Version has SHA-256 $hash, not $($Files[$name])." }
    }
    if ($Exact) {
        $expected = @{}
        foreach ($name in $Files.Keys) { $expected[(Resolve-EntryPath $Root $name).ToLowerInvariant()] = $true }
        foreach ($file in Get-ChildItem -LiteralPath $Root -Recurse -File -Force) {
            if (-not $expected.ContainsKey($file.FullName.ToLowerInvariant())) {
                throw "The extracted $Handler $Version holds '$($file.FullName)', which is not in the package."
            }
        }
    }
}

function Remove-Tree([string]$Path) {
    # a half-extracted earlier attempt; links inside are removed themselves, never followed
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

$files = @{}
foreach ($property in (ConvertFrom-Json -InputObject $FilesJson).PSObject.Properties) {
    if ([string]$property.Value -notmatch '^[0-9a-f]{64}$') { throw "The file list gives '$($property.Name)' no SHA-256." }
    $files[$property.Name] = [string]$property.Value
}
$zip = Resolve-ConfinedPath $StateRoot @('packages', $Handler, "$Version.zip")
if (-not (Test-Path -LiteralPath $zip)) {
    throw "The package $Handler $Version is not in the package cache."
}
New-ProtectedDirectory $PluginsRoot -KeepExisting
$handlerDir = Resolve-ConfinedPath $PluginsRoot @($Handler)
New-ProtectedDirectory $handlerDir
$dir = Resolve-ConfinedPath $PluginsRoot @($Handler, $Version)
$marker = Join-Path $dir 'arcext.package.sha256'
Add-Type -AssemblyName System.IO.Compression
$expanded = $false
$stream = New-Object System.IO.FileStream($zip, [System.IO.FileMode]::Open, [System.IO.FileAccess]::Read,
    [System.IO.FileShare]::Read)
try {
    $hasher = [System.Security.Cryptography.SHA256]::Create()
    $actual = [System.BitConverter]::ToString($hasher.ComputeHash($stream)).Replace('-', '').ToLowerInvariant()
    $hasher.Dispose()
    if ($actual -ne $Sha256.ToLowerInvariant()) {
        throw "The cached package $Handler $Version has SHA-256 $actual, expected $Sha256."
    }
    if ((Test-Path -LiteralPath $marker) -and ((Read-TextFile $marker).Trim() -eq $actual)) {
        Test-Tree $dir $files
    } else {
        if (Test-Path -LiteralPath $dir) {
            # a half-extracted earlier attempt goes; an installed version from another package stays
            $stateFile = Join-Path $dir 'HandlerState'
            if ((Test-Path -LiteralPath $marker) -and (Test-Path -LiteralPath $stateFile) -and
                (Read-TextFile $stateFile).Trim() -notin @('', 'NotInstalled')) {
                throw "$Handler $Version is installed from another package (SHA-256 $((Read-TextFile $marker).Trim())); remove it first."
            }
            Remove-Tree $dir
        }
        New-ProtectedDirectory $dir -Inherit
        $stream.Position = 0
        $archive = New-Object System.IO.Compression.ZipArchive($stream, [System.IO.Compression.ZipArchiveMode]::Read, $true)
        try {
            foreach ($entry in $archive.Entries) {
                $target = Resolve-EntryPath $dir $entry.FullName.TrimEnd('/', '\')
                if ($entry.FullName.EndsWith('/') -or $entry.FullName.EndsWith('\')) {
                    New-ProtectedDirectory $target -Inherit
                    continue
                }
                if (-not $files.ContainsKey($entry.FullName)) {
                    throw "The package entry '$($entry.FullName)' is not in the package's file list."
                }
                New-ProtectedDirectory ([System.IO.Path]::GetDirectoryName($target)) -Inherit
                $source = $entry.Open()
                try {
                    $out = New-Object System.IO.FileStream($target, [System.IO.FileMode]::CreateNew,
                        [System.IO.FileAccess]::Write, [System.IO.FileShare]::None)
                    try { $source.CopyTo($out) } finally { $out.Dispose() }
                } finally {
                    $source.Dispose()
                }
            }
        } finally {
            $archive.Dispose()
        }
        Test-Tree $dir $files -Exact
        foreach ($sub in 'RuntimeSettings', 'Status') {
            New-ProtectedDirectory (Resolve-ConfinedPath $PluginsRoot @($Handler, $Version, $sub)) -Inherit
        }
        $logDir = Join-Path (Join-Path (Join-Path $env:SystemDrive 'WindowsAzure\Logs\Plugins') $Handler) $Version
        $handlerEnv = @([pscustomobject]@{
                version            = '1.0'
                handlerEnvironment = [pscustomobject]@{
                    logFolder     = $logDir
                    configFolder  = Join-Path $dir 'RuntimeSettings'
                    statusFolder  = Join-Path $dir 'Status'
                    heartbeatFile = Join-Path $dir 'heartbeat.json'
                }
            })
        Write-TextFile (Join-Path $dir 'HandlerEnvironment.json') (ConvertTo-Json -InputObject $handlerEnv -Depth 5)
        Write-TextFile (Join-Path $dir 'HandlerState') 'NotInstalled'
        Write-TextFile $marker $actual
        $expanded = $true
    }
} finally {
    $stream.Dispose()
}
$manifest = Read-JsonFile (Join-Path $dir 'HandlerManifest.json') -First

[pscustomobject]@{
    path            = $dir
    expanded        = $expanded
    handlerManifest = $manifest.handlerManifest
} | ConvertTo-Json -Compress -Depth 6
