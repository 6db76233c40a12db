# arcext WinRS bootstrap (sent as -EncodedCommand, so it stays far below 3 KB). stdin: one JSON list
# of {name, sha256, contentBase64}, the agent scripts. Each is SHA-256 verified and written to
# $env:ProgramData\arcext\scripts\<name>.ps1 unless the file there already has that hash.
param(
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$dir = Join-Path $env:ProgramData 'arcext\scripts'
New-Item -ItemType Directory -Path $dir -Force | Out-Null
$sha = [System.Security.Cryptography.SHA256]::Create()
$written = @()
$unchanged = @()
$files = (@($input) -join '') | ConvertFrom-Json
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
    Move-Item -LiteralPath $tmp -Destination $path -Force
    $written += $file.name
}
[pscustomobject]@{ written = $written; unchanged = $unchanged } | ConvertTo-Json -Compress
