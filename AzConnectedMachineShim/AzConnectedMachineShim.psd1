#
# Module manifest for AzConnectedMachineShim: the Az.ConnectedMachine extension cmdlets over an arcext backend.
#
@{
    RootModule           = 'AzConnectedMachineShim.psm1'
    ModuleVersion        = '0.1.0'
    CompatiblePSEditions = @('Core')
    GUID                 = '79b4f0e9-8c64-4110-b3ca-8efe77b272c2'
    Author               = 'arcext contributors'
    CompanyName          = 'arcext'
    Copyright            = '(c) arcext contributors. MIT License.'
    Description          = 'Az.ConnectedMachine-compatible cmdlets (machines, extensions, extension upgrades, extension metadata, upgrade history) for a self-hosted arcext control plane that serves the Microsoft.HybridCompute API.'
    PowerShellVersion    = '7.2'

    # No dependency on Az.Accounts: the shim authenticates with an arcext bearer token.
    RequiredModules      = @()

    FormatsToProcess     = @('AzConnectedMachineShim.format.ps1xml')

    # Explicit lists, never wildcards: the file names in Public/ are the exported functions.
    FunctionsToExport    = @(
        'Connect-Arcext'
        'Disconnect-Arcext'
        'Get-AzConnectedExtensionMetadata'
        'Get-AzConnectedMachine'
        'Get-AzConnectedMachineExtension'
        'Get-ArcextExtensionUpgradeHistory'
        'New-AzConnectedMachineExtension'
        'Remove-AzConnectedMachineExtension'
        'Set-AzConnectedMachineExtension'
        'Update-AzConnectedExtension'
        'Update-AzConnectedMachineExtension'
    )
    CmdletsToExport      = @()
    VariablesToExport    = @()
    # arcext's own cmdlets under their first names (before they took arcext nouns).
    AliasesToExport      = @(
        'Connect-AzConnectedMachineShim'
        'Disconnect-AzConnectedMachineShim'
        'Get-AzConnectedMachineExtensionUpgradeHistory'
    )

    PrivateData          = @{
        PSData = @{
            Tags         = @('Azure', 'AzureArc', 'HybridCompute', 'ConnectedMachine', 'Extensions', 'arcext', 'PSEdition_Core')
            ReleaseNotes = 'First release: Az.ConnectedMachine extension cmdlets over arcext.'
        }
    }
}
