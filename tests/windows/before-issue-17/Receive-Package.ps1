# arcext agent operation: receive an extension package as base64 chunks on pipeline input, verify
# its SHA-256 and keep it in the package cache (C:\ProgramData\arcext\packages\<handler>\<version>.zip).
# The cached zip is the last-known-good copy a rollback re-stages from.
param(
    [Parameter(Mandatory = $true)][string]$Handler,
    [Parameter(Mandatory = $true)][string]$Version,
    [Parameter(Mandatory = $true)][string]$Sha256,
    [Parameter(ValueFromPipeline = $true)][string]$Chunk
)
begin {
    $ErrorActionPreference = 'Stop'
    $cacheDir = Join-Path 'C:\ProgramData\arcext\packages' $Handler
    New-Item -ItemType Directory -Path $cacheDir -Force | Out-Null
    $partial = Join-Path $cacheDir "$Version.zip.partial"
    $target = Join-Path $cacheDir "$Version.zip"
    $stream = [System.IO.File]::Create($partial)
    $hasher = [System.Security.Cryptography.SHA256]::Create()
    $size = 0
}
process {
    if ($Chunk) {
        $bytes = [System.Convert]::FromBase64String($Chunk)
        $stream.Write($bytes, 0, $bytes.Length)
        $null = $hasher.TransformBlock($bytes, 0, $bytes.Length, $bytes, 0)
        $size += $bytes.Length
    }
}
end {
    $null = $hasher.TransformFinalBlock([byte[]]::new(0), 0, 0)
    $stream.Dispose()
    $actual = [System.BitConverter]::ToString($hasher.Hash).Replace('-', '').ToLowerInvariant()
    $verified = $actual -eq $Sha256.ToLowerInvariant()
    if ($verified) {
        Move-Item -LiteralPath $partial -Destination $target -Force
    } else {
        Remove-Item -LiteralPath $partial -Force
    }
    [pscustomobject]@{ sha256 = $actual; size = $size; verified = $verified } | ConvertTo-Json -Compress
}
