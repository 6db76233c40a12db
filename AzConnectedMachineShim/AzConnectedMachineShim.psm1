# AzConnectedMachineShim root module.
# Dot-sources every function in Private/ and Public/, then exports the public ones (one function per
# file, file name = function name). The manifest's FunctionsToExport lists the same names explicitly.

$script:ModuleRoot = $PSScriptRoot

# Connection set by Connect-Arcext; $null means "use the ARCEXT_* environment variables".
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

# arcext's own cmdlets have arcext nouns so nobody mistakes them for Az's; their first names stay as aliases.
$script:ArcShimAliases = [ordered]@{
    'Connect-AzConnectedMachineShim'                = 'Connect-Arcext'
    'Disconnect-AzConnectedMachineShim'             = 'Disconnect-Arcext'
    'Get-AzConnectedMachineExtensionUpgradeHistory' = 'Get-ArcextExtensionUpgradeHistory'
}
foreach ($alias in $script:ArcShimAliases.Keys) {
    Set-Alias -Name $alias -Value $script:ArcShimAliases[$alias] -Scope Script
}

Export-ModuleMember -Function $public.BaseName -Alias @($script:ArcShimAliases.Keys)
