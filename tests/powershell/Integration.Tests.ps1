#Requires -Version 7.2
# Integration tests against a live arcext backend. scripts/test-powershell starts one and sets
# ARCEXT_ENDPOINT, ARCEXT_TOKEN (an Owner token) and ARCEXT_SUBSCRIPTION_ID; without them these tests are
# skipped. They run the three lines of the Azure Arc documentation verbatim and the pipeline case.

BeforeDiscovery {
    $script:Live = -not [string]::IsNullOrEmpty($env:ARCEXT_ENDPOINT) -and -not [string]::IsNullOrEmpty($env:ARCEXT_TOKEN)
    $script:EngineRoutes = $false
    if ($script:Live) {
        # Manual upgrade and the activity log come with the upgrade engine; test them once the server serves them.
        $paths = (Invoke-RestMethod -Uri "$($env:ARCEXT_ENDPOINT.TrimEnd('/'))/arcext/v1/openapi.json" -SkipCertificateCheck).paths.PSObject.Properties.Name
        $script:EngineRoutes = [bool]($paths | Where-Object { $_ -like '*/upgradeExtensions' }) -and [bool]($paths | Where-Object { $_ -like '*/eventtypes/management/values' })
    }
}

Describe 'AzConnectedMachineShim against a live arcext backend' -Tag 'Integration' -Skip:(-not $Live) {
    BeforeAll {
        Import-Module (Join-Path $PSScriptRoot '../../AzConnectedMachineShim/AzConnectedMachineShim.psd1') -Force -ErrorAction Stop

        # The Azure Arc documentation lines, verbatim; the tests fill in the placeholder names.
        $script:ArcDocLines = @(
            'Get-AzConnectedMachineExtension -ResourceGroup resourceGroupName -MachineName machineName | Format-Table Name, EnableAutomaticUpgrade'
            'Update-AzConnectedMachineExtension -ResourceGroup resourceGroupName -MachineName machineName -Name extensionName -EnableAutomaticUpgrade'
            'Update-AzConnectedMachineExtension -ResourceGroup resourceGroupName -MachineName machineName -Name extensionName -EnableAutomaticUpgrade:$false'
        )
        function Invoke-ArcDocLine {
            param([Parameter(Mandatory)] [int] $Index)
            $line = $script:ArcDocLines[$Index].Replace('resourceGroupName', $script:ResourceGroup).Replace('machineName', $script:MachineName).Replace('extensionName', $script:ExtensionName)
            & ([scriptblock]::Create($line))
        }

        $script:Endpoint = $env:ARCEXT_ENDPOINT.TrimEnd('/')
        $script:AdminHeaders = @{ Authorization = "Bearer $env:ARCEXT_TOKEN" }
        $script:ResourceGroup = 'pester-rg'
        $script:MachineName = "pester-$([guid]::NewGuid().ToString('N').Substring(0, 8))"
        $script:ExtensionName = 'AzureMonitorWindowsAgent'
        $script:Publisher = 'Microsoft.Azure.Monitor'

        # Az.ConnectedMachine cannot create machines (the agent onboards them), so the test creates one with
        # the module's own HTTP helper, as an agent's PUT would.
        & (Get-Module AzConnectedMachineShim) {
            param($ResourceGroup, $MachineName)
            $path = Resolve-ArcPath -Route Machine -Values @{ subscriptionId = (Resolve-ArcSubscriptionId); resourceGroupName = $ResourceGroup; machineName = $MachineName }
            $null = Invoke-ArcRequest -Method PUT -Path $path -Body @{ location = 'eastus'; properties = @{ osType = 'windows' } }
        } $script:ResourceGroup $script:MachineName

        # Publish the versions the tests install and upgrade to (arcext admin API).
        foreach ($version in '1.0', '1.1') {
            $null = Invoke-RestMethod -Method Put -Uri "$script:Endpoint/arcext/v1/catalog/$script:Publisher/$script:ExtensionName/versions/$version" `
                -Headers $script:AdminHeaders -ContentType 'application/json' -Body '{"critical": false}' -SkipCertificateCheck
        }

        $script:Created = New-AzConnectedMachineExtension -ResourceGroupName $script:ResourceGroup -MachineName $script:MachineName -Location eastus `
            -Name $script:ExtensionName -Publisher $script:Publisher -ExtensionType $script:ExtensionName -TypeHandlerVersion 1.0 `
            -Setting @{ workspace = 'pester' } -ProtectedSetting @{ secret = 'pester-s3cr3t' } -ErrorAction Stop
    }

    AfterAll {
        Remove-Module AzConnectedMachineShim -Force -ErrorAction SilentlyContinue
    }

    It 'created the extension and waited for the operation' {
        $script:Created.Name | Should -Be $script:ExtensionName
        $script:Created.ProvisioningState | Should -Be 'Succeeded'
        $script:Created.EnableAutomaticUpgrade | Should -BeTrue -Because 'automatic upgrade is on by default'
    }

    It 'Arc documentation line 1 shows Name and EnableAutomaticUpgrade' {
        $table = Invoke-ArcDocLine -Index 0 | Out-String
        $table | Should -Match 'Name\s+EnableAutomaticUpgrade'
        $table | Should -Match "$script:ExtensionName\s+True"
    }

    It 'Arc documentation line 3 disables automatic upgrade' {
        $result = Invoke-ArcDocLine -Index 2
        $result.EnableAutomaticUpgrade | Should -BeFalse
        (Get-AzConnectedMachineExtension -ResourceGroupName $script:ResourceGroup -MachineName $script:MachineName -Name $script:ExtensionName).EnableAutomaticUpgrade | Should -BeFalse
    }

    It 'Arc documentation line 2 enables automatic upgrade' {
        $result = Invoke-ArcDocLine -Index 1
        $result.EnableAutomaticUpgrade | Should -BeTrue
        (Get-AzConnectedMachineExtension -ResourceGroupName $script:ResourceGroup -MachineName $script:MachineName -Name $script:ExtensionName).EnableAutomaticUpgrade | Should -BeTrue
    }

    It 'updates extensions from the pipeline' {
        $result = @(Get-AzConnectedMachineExtension -ResourceGroupName $script:ResourceGroup -MachineName $script:MachineName | Update-AzConnectedMachineExtension -EnableAutomaticUpgrade:$false)
        $result.Count | Should -Be 1
        $result[0].EnableAutomaticUpgrade | Should -BeFalse
        $after = Get-AzConnectedMachineExtension -ResourceGroupName $script:ResourceGroup -MachineName $script:MachineName -Name $script:ExtensionName
        $after.EnableAutomaticUpgrade | Should -BeFalse
        $after.Setting['workspace'] | Should -Be 'pester' -Because 'a PATCH keeps the other properties'
    }

    It 'never returns protected settings' {
        $json = Get-AzConnectedMachineExtension -ResourceGroupName $script:ResourceGroup -MachineName $script:MachineName | ConvertTo-Json -Depth 20
        $json | Should -Not -Match 'pester-s3cr3t'
        $json | Should -Not -Match '(?i)protected'
    }

    It 'runs as a job with -AsJob' {
        $job = Update-AzConnectedMachineExtension -ResourceGroupName $script:ResourceGroup -MachineName $script:MachineName -Name $script:ExtensionName -EnableAutomaticUpgrade -AsJob
        $result = $job | Wait-Job -Timeout 120 | Receive-Job -ErrorAction Stop
        $job | Remove-Job -Force
        $result.EnableAutomaticUpgrade | Should -BeTrue
    }

    It 'lists the machine and the published versions' {
        (Get-AzConnectedMachine -ResourceGroupName $script:ResourceGroup -Name $script:MachineName).Name | Should -Be $script:MachineName
        (Get-AzConnectedMachine).Name | Should -Contain $script:MachineName
        $versions = @(Get-AzConnectedExtensionMetadata -Location eastus -Publisher $script:Publisher -ExtensionType $script:ExtensionName).Version
        $versions | Should -Contain '1.0'
        $versions | Should -Contain '1.1'
    }

    It 'reports a missing extension as ObjectNotFound' {
        Get-AzConnectedMachineExtension -ResourceGroupName $script:ResourceGroup -MachineName $script:MachineName -Name 'no-such-extension' -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $err[0].FullyQualifiedErrorId | Should -BeLike 'ResourceNotFound,*'
    }

    It 'reports a wrong token as PermissionDenied' {
        try {
            Connect-Arcext -Endpoint $script:Endpoint -Token (ConvertTo-SecureString -String 'not-a-token' -AsPlainText -Force) -SkipCertificateCheck
            Get-AzConnectedMachineExtension -ResourceGroupName $script:ResourceGroup -MachineName $script:MachineName -ErrorVariable err -ErrorAction SilentlyContinue
            $err[0].CategoryInfo.Category | Should -Be 'PermissionDenied'
            $err[0].FullyQualifiedErrorId | Should -BeLike 'AuthenticationFailed,*'
        }
        finally {
            Disconnect-Arcext
        }
    }

    Context 'manual upgrade and upgrade history' -Skip:(-not $EngineRoutes) {
        It 'upgrades the extension now with Update-AzConnectedExtension' {
            $target = @{ "$script:Publisher.$script:ExtensionName" = @{ targetVersion = '1.1' } }
            Update-AzConnectedExtension -ResourceGroupName $script:ResourceGroup -MachineName $script:MachineName -ExtensionTarget $target -PassThru | Should -BeTrue
            (Get-AzConnectedMachineExtension -ResourceGroupName $script:ResourceGroup -MachineName $script:MachineName -Name $script:ExtensionName).TypeHandlerVersion | Should -Be '1.1'
        }

        It 'shows the manual upgrade in the upgrade history' {
            $history = @(Get-AzConnectedMachineExtension -ResourceGroupName $script:ResourceGroup -MachineName $script:MachineName -Name $script:ExtensionName |
                    Get-ArcextExtensionUpgradeHistory -StartTime (Get-Date).AddHours(-1))
            $history | Where-Object { $_.ToVersion -eq '1.1' -and -not $_.IsAutomatic } | Should -Not -BeNullOrEmpty
        }
    }

    It 'honours -WhatIf, then removes the extension' {
        Remove-AzConnectedMachineExtension -ResourceGroupName $script:ResourceGroup -MachineName $script:MachineName -Name $script:ExtensionName -WhatIf
        Get-AzConnectedMachineExtension -ResourceGroupName $script:ResourceGroup -MachineName $script:MachineName -Name $script:ExtensionName | Should -Not -BeNullOrEmpty

        Remove-AzConnectedMachineExtension -ResourceGroupName $script:ResourceGroup -MachineName $script:MachineName -Name $script:ExtensionName -PassThru | Should -BeTrue
        Get-AzConnectedMachineExtension -ResourceGroupName $script:ResourceGroup -MachineName $script:MachineName -Name $script:ExtensionName -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
    }
}
