#Requires -Version 7.2
# General checks of the AzConnectedMachineShim module, in PowerShell itself: manifest, exports, help,
# format data, and how the Arc documentation's parameter names bind.

BeforeDiscovery {
    $script:PublicNames = @(Get-ChildItem -Path "$PSScriptRoot/../../AzConnectedMachineShim/Public" -Filter '*.ps1').BaseName
}

BeforeAll {
    $script:ManifestPath = Join-Path $PSScriptRoot '../../AzConnectedMachineShim/AzConnectedMachineShim.psd1'
    Import-Module $script:ManifestPath -Force -ErrorAction Stop
    $script:Module = Get-Module AzConnectedMachineShim
}

AfterAll {
    Remove-Module AzConnectedMachineShim -Force -ErrorAction SilentlyContinue
}

Describe 'AzConnectedMachineShim manifest' {
    It 'is a valid module manifest' {
        { Test-ModuleManifest -Path $script:ManifestPath -ErrorAction Stop } | Should -Not -Throw
    }

    It 'requires PowerShell 7.2 (Core) and no other module' {
        $manifest = Import-PowerShellDataFile -Path $script:ManifestPath
        [version]$manifest.PowerShellVersion | Should -BeGreaterOrEqual ([version]'7.2')
        $manifest.CompatiblePSEditions | Should -Be @('Core')
        $manifest.RequiredModules | Should -BeNullOrEmpty
    }

    It 'exports exactly the functions in Public/' {
        $exported = @($script:Module.ExportedFunctions.Keys | Sort-Object)
        $exported | Should -Be @($script:PublicNames | Sort-Object)
        $script:Module.ExportedCmdlets.Count | Should -Be 0
        $script:Module.ExportedAliases.Count | Should -Be 0
        $script:Module.ExportedVariables.Count | Should -Be 0
    }

    It 'keeps Private functions private' {
        foreach ($file in Get-ChildItem -Path (Join-Path $script:Module.ModuleBase 'Private') -Filter '*.ps1') {
            $script:Module.ExportedFunctions.Keys | Should -Not -Contain $file.BaseName
        }
        Get-Command -Name Invoke-ArcRequest -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }

    It 'loads the table views of every object type it writes' {
        foreach ($type in 'MachineExtension', 'Machine', 'ExtensionValue', 'ExtensionUpgradeEvent', 'Context') {
            Get-FormatData -TypeName "AzConnectedMachineShim.$type" | Should -Not -BeNullOrEmpty -Because $type
        }
    }
}

Describe '<_> help and binding' -ForEach $PublicNames {
    BeforeAll {
        $script:Command = Get-Command -Name $_ -Module AzConnectedMachineShim
        $script:Help = Get-Help -Name $_ -Full
    }

    It 'is an advanced function with a synopsis and at least two examples' {
        $script:Command.CmdletBinding | Should -BeTrue
        $script:Help.Synopsis | Should -Not -BeNullOrEmpty
        $script:Help.Synopsis | Should -Not -Match '^\s*\w+-\w+\s*\[' -Because 'a synopsis, not the generated syntax'
        @($script:Help.Examples.Example).Count | Should -BeGreaterOrEqual 2
    }

    It 'documents every parameter' {
        $common = @([System.Management.Automation.PSCmdlet]::CommonParameters) + @([System.Management.Automation.PSCmdlet]::OptionalCommonParameters)
        foreach ($name in $script:Command.Parameters.Keys | Where-Object { $_ -notin $common }) {
            $parameterHelp = $script:Help.Parameters.Parameter | Where-Object Name -EQ $name
            $parameterHelp.Description.Text | Should -Not -BeNullOrEmpty -Because "-$name needs help"
        }
    }

    It 'declares SupportsShouldProcess exactly when it changes state' {
        $changesState = $_.Split('-')[0] -in 'New', 'Set', 'Update', 'Remove'
        $script:Command.Parameters.ContainsKey('WhatIf') | Should -Be $changesState
    }
}

Describe 'Parameters of the Azure Arc documentation lines' {
    It '-ResourceGroup binds to -ResourceGroupName on <_>' -ForEach 'Get-AzConnectedMachineExtension', 'Update-AzConnectedMachineExtension' {
        (Get-Command $_).ResolveParameter('ResourceGroup').Name | Should -Be 'ResourceGroupName'
    }

    It '-EnableAutomaticUpgrade is a switch on <_>' -ForEach 'New-AzConnectedMachineExtension', 'Set-AzConnectedMachineExtension', 'Update-AzConnectedMachineExtension' {
        (Get-Command $_).Parameters['EnableAutomaticUpgrade'].ParameterType | Should -Be ([switch])
        (Get-Command $_).Parameters['AutoUpgradeMinorVersion'].ParameterType | Should -Be ([switch])
    }

    It 'keeps Az aliases -Settings and -ProtectedSettings on <_>' -ForEach 'New-AzConnectedMachineExtension', 'Set-AzConnectedMachineExtension', 'Update-AzConnectedMachineExtension' {
        (Get-Command $_).Parameters['Setting'].Aliases | Should -Contain 'Settings'
        (Get-Command $_).Parameters['ProtectedSetting'].Aliases | Should -Contain 'ProtectedSettings'
    }
}
