# arcext agent operation: receive an extension package as base64 chunks on pipeline input, verify
# its SHA-256 and keep it in the package cache ($env:ProgramData\arcext\packages\<handler>\<version>.zip).
# The cached zip is the last-known-good copy a rollback re-stages from. Each chunk is appended with
# the file opened and closed around it, so a failed or abandoned call leaves no open handle behind;
# each call writes its own uniquely named .partial file.
param(
    [Parameter(Mandatory = $true)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+$')][string]$Handler,
    [Parameter(Mandatory = $true)][ValidatePattern('^\d{1,9}(\.\d{1,9}){0,3}$')][string]$Version,
    [Parameter(Mandatory = $true)][ValidatePattern('^[0-9a-fA-F]{64}$')][string]$Sha256,
    [Parameter(ValueFromPipeline = $true)][string]$Chunk
)
begin {
    $ErrorActionPreference = 'Stop'
    # --- arcext common block: AgentCommon.ps1 ---

    New-ProtectedDirectory $StateRoot
    New-ProtectedDirectory (Resolve-ConfinedPath $StateRoot @('packages')) -Inherit
    $cacheDir = Resolve-ConfinedPath $StateRoot @('packages', $Handler)
    New-ProtectedDirectory $cacheDir -Inherit
    $target = Resolve-ConfinedPath $StateRoot @('packages', $Handler, "$Version.zip")
    $stale = (Get-Date).ToUniversalTime().AddHours(-1)
    foreach ($old in Get-ChildItem -LiteralPath $cacheDir -Filter "$Version.zip.*.partial" -File) {
        if ($old.LastWriteTimeUtc -lt $stale) { [System.IO.File]::Delete($old.FullName) }
    }
    $partial = "$target.$([guid]::NewGuid().ToString('N')).partial"
    [System.IO.File]::WriteAllBytes($partial, (New-Object byte[] 0))
    $hasher = [System.Security.Cryptography.SHA256]::Create()
    $size = 0
}
process {
    if ($Chunk) {
        $bytes = [System.Convert]::FromBase64String($Chunk)
        $stream = New-Object System.IO.FileStream($partial, [System.IO.FileMode]::Append,
            [System.IO.FileAccess]::Write, [System.IO.FileShare]::None)
        try {
            $stream.Write($bytes, 0, $bytes.Length)
        } finally {
            $stream.Dispose()
        }
        $null = $hasher.TransformBlock($bytes, 0, $bytes.Length, $bytes, 0)
        $size += $bytes.Length
    }
}
end {
    $null = $hasher.TransformFinalBlock((New-Object byte[] 0), 0, 0)
    $actual = [System.BitConverter]::ToString($hasher.Hash).Replace('-', '').ToLowerInvariant()
    $hasher.Dispose()
    $verified = $actual -eq $Sha256.ToLowerInvariant()
    try {
        if ($verified -and [System.IO.File]::Exists($target)) {
            [System.IO.File]::Replace($partial, $target, [NullString]::Value)
        } elseif ($verified) {
            [System.IO.File]::Move($partial, $target)
        }
    } finally {
        if ([System.IO.File]::Exists($partial)) { [System.IO.File]::Delete($partial) }
    }
    [pscustomobject]@{ sha256 = $actual; size = $size; verified = $verified } | ConvertTo-Json -Compress
}
