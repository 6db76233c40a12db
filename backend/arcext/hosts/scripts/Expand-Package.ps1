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
# --- arcext common block: AgentCommon.ps1 ---

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
