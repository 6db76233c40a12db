# arcext WinRS bootstrap (sent as -EncodedCommand, so it stays far below 3 KB). stdin: one JSON list
# of {name, sha256, contentBase64}, the agent scripts. Each is SHA-256 verified and written to
# $env:ProgramData\arcext\scripts\<name>.ps1 unless the file there already has that hash. The
# arcext folder gets an ACL that only SYSTEM and Administrators can write.
param(
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$root = Join-Path $env:ProgramData 'arcext'
$dir = Join-Path $root 'scripts'
foreach ($d in $root, $dir) {
    if (-not (Test-Path -LiteralPath $d)) { $null = New-Item -ItemType Directory -Path $d }
    if ((Get-Item -LiteralPath $d -Force).Attributes -band [System.IO.FileAttributes]::ReparsePoint) { throw "$d is a link." }
}
if (-not (Get-Acl -LiteralPath $root).AreAccessRulesProtected) {
    $acl = New-Object System.Security.AccessControl.DirectorySecurity
    $acl.SetAccessRuleProtection($true, $false)
    foreach ($sid in 'S-1-5-18', 'S-1-5-32-544') {
        $acl.AddAccessRule((New-Object System.Security.AccessControl.FileSystemAccessRule(
                    (New-Object System.Security.Principal.SecurityIdentifier($sid)), 'FullControl',
                    'ContainerInherit, ObjectInherit', 'None', 'Allow')))
    }
    Set-Acl -LiteralPath $root -AclObject $acl
}
$sha = [System.Security.Cryptography.SHA256]::Create()
$written = @()
$unchanged = @()
$files = ConvertFrom-Json -InputObject (@($input) -join '')
foreach ($file in $files) {
    if ($file.name -notmatch '^[A-Za-z]+-[A-Za-z]+$') { throw "Invalid agent script name '$($file.name)'." }
    $bytes = [System.Convert]::FromBase64String($file.contentBase64)
    $hash = [System.BitConverter]::ToString($sha.ComputeHash($bytes)).Replace('-', '').ToLowerInvariant()
    if ($hash -ne $file.sha256) { throw "Agent script $($file.name) arrived with SHA-256 $hash, not $($file.sha256)." }
    $path = Join-Path $dir "$($file.name).ps1"
    if ((Test-Path -LiteralPath $path) -and (Get-FileHash -LiteralPath $path -Algorithm SHA256).Hash -eq $hash) {
        $unchanged += $file.name
        continue
    }
    $tmp = "$path.$PID.$([guid]::NewGuid().ToString('N')).tmp"  # two jobs uploading at once never share it
    [System.IO.File]::WriteAllBytes($tmp, $bytes)
    if ([System.IO.File]::Exists($path)) { [System.IO.File]::Replace($tmp, $path, [NullString]::Value) }
    else { [System.IO.File]::Move($tmp, $path) }
    $written += $file.name
}
[pscustomobject]@{ written = $written; unchanged = $unchanged } | ConvertTo-Json -Compress
