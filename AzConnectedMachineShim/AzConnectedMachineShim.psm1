# AzConnectedMachineShim root module.
# Dot-sources every function in Private/ and Public/, then exports the public ones (one function per
# file, file name = function name). The manifest's FunctionsToExport lists the same names explicitly.

$script:ModuleRoot = $PSScriptRoot

# Connection set by Connect-AzConnectedMachineShim; $null means "use the ARCEXT_* environment variables".
$script:ArcShimContext = $null

$private = @(Get-ChildItem -Path (Join-Path $PSScriptRoot 'Private') -Filter '*.ps1' -File -ErrorAction Stop)
$public = @(Get-ChildItem -Path (Join-Path $PSScriptRoot 'Public') -Filter '*.ps1' -File -ErrorAction Stop)

foreach ($file in @($private + $public)) {
    try {
        . $file.FullName
    }
    catch {
        throw [System.InvalidOperationException]::new("AzConnectedMachineShim: cannot load $($file.FullName): $($_.Exception.Message)", $_.Exception)
    }
}

Export-ModuleMember -Function $public.BaseName
