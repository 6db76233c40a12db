#
# Optional compatibility module: a module named Az.ConnectedMachine that loads AzConnectedMachineShim, so scripts
# that start with '#Requires -Modules Az.ConnectedMachine' or 'Import-Module Az.ConnectedMachine' run unchanged
# against arcext. Put the folder that holds this one (AzConnectedMachineShim/compat) first on $env:PSModulePath.
# Never install it next to the real Az.ConnectedMachine: whichever comes first on PSModulePath wins.
#
@{
    RootModule           = 'Az.ConnectedMachine.psm1'
    ModuleVersion        = '0.1.0'
    CompatiblePSEditions = @('Core')
    GUID                 = '0a7b6f39-2b55-4d9e-9c1f-3e6a8d2c4b71'
    Author               = 'arcext contributors'
    CompanyName          = 'arcext'
    Copyright            = '(c) arcext contributors. MIT License.'
    Description          = 'arcext compatibility module: loads AzConnectedMachineShim under the name Az.ConnectedMachine (not the Microsoft module).'
    PowerShellVersion    = '7.2'
    NestedModules        = @('../../AzConnectedMachineShim.psd1')

    FunctionsToExport    = @(
        'Get-AzConnectedExtensionMetadata'
        'Get-AzConnectedMachine'
        'Get-AzConnectedMachineExtension'
        'New-AzConnectedMachineExtension'
        'Remove-AzConnectedMachineExtension'
        'Set-AzConnectedMachineExtension'
        'Update-AzConnectedExtension'
        'Update-AzConnectedMachineExtension'
        'Connect-Arcext'
        'Disconnect-Arcext'
        'Get-ArcextExtensionUpgradeHistory'
        'Get-AzContext'
        'Set-AzContext'
    )
    CmdletsToExport      = @()
    VariablesToExport    = @()
    AliasesToExport      = @('Connect-AzConnectedMachineShim', 'Disconnect-AzConnectedMachineShim', 'Get-AzConnectedMachineExtensionUpgradeHistory')

    PrivateData          = @{
        PSData = @{
            Tags = @('arcext', 'AzureArc', 'Compatibility', 'PSEdition_Core')
        }
    }
}
