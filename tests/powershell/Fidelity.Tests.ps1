#Requires -Version 7.2
# Issue #13: scripts written for Az.ConnectedMachine run unchanged. One Describe per item of the issue's
# PowerShell section. The module's HTTP helper (Invoke-ArcRequest) is mocked: each test checks the request a
# cmdlet sends and what it writes. tests/test_powershell_fidelity.py checks the same cmdlets statically against
# the parameter table of the real module (fixtures/az-connectedmachine-parameters.json).

BeforeAll {
    $script:ModuleRoot = Join-Path $PSScriptRoot '../../AzConnectedMachineShim'
    Import-Module (Join-Path $script:ModuleRoot 'AzConnectedMachineShim.psd1') -Force -ErrorAction Stop

    $script:Sub = '00000000-0000-0000-0000-000000000000'
    $script:Rp = "/subscriptions/$script:Sub/resourceGroups/rg1/providers/Microsoft.HybridCompute"
    $token = ConvertTo-SecureString -String 'unit-test-token' -AsPlainText -Force
    Connect-Arcext -Endpoint 'http://127.0.0.1:5000' -Token $token -SubscriptionId $script:Sub

    # An extension resource as the server returns it, for the mocked GET/PUT/PATCH answers.
    function New-TestExtensionResource {
        param([string] $Path = "$script:Rp/machines/m1/extensions/custom")
        @{
            id         = $Path
            name       = ($Path -split '/')[-1]
            type       = 'Microsoft.HybridCompute/machines/extensions'
            location   = 'eastus'
            tags       = @{ env = 'test' }
            properties = @{
                publisher              = 'Microsoft.Compute'
                type                   = 'CustomScriptExtension'
                typeHandlerVersion     = '1.10'
                enableAutomaticUpgrade = $true
                settings               = @{ commandToExecute = 'hostname' }
                provisioningState      = 'Succeeded'
            }
        }
    }
    $script:Answer = {
        $resource = if ($Path -like '*/extensions/*') { New-TestExtensionResource -Path ($Path -split '\?')[0] } else { @{ id = $Path; name = ($Path -split '/')[-1]; location = 'westeurope'; properties = @{} } }
        [pscustomobject]@{ StatusCode = 200; Headers = @{}; Body = $resource; Uri = $Path }
    }
}

AfterAll {
    Remove-Module -Name 'AzConnectedMachineShim', 'Az.ConnectedMachine' -Force -ErrorAction SilentlyContinue
}

Describe 'Update-AzConnectedMachineExtension -TypeHandlerVersion (item 1)' {
    BeforeAll { Mock -ModuleName AzConnectedMachineShim Invoke-ArcRequest $script:Answer }

    It 'sends typeHandlerVersion in the PATCH and warns about nothing' {
        $null = Update-AzConnectedMachineExtension -ResourceGroupName rg1 -MachineName m1 -Name custom -TypeHandlerVersion 1.10 -WarningVariable warnings
        $warnings | Should -BeNullOrEmpty
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'PATCH' -and $Body.properties.typeHandlerVersion -eq '1.10'
        }
    }
}

Describe 'Whole-object parameter sets and the examples of Az''s help (item 2)' {
    BeforeAll { Mock -ModuleName AzConnectedMachineShim Invoke-ArcRequest $script:Answer }

    It 'New: Create with an extension piped in (Az help example 2)' {
        $otherExtension = Get-AzConnectedMachineExtension -Name custom -ResourceGroupName rg1 -MachineName other
        $null = $otherExtension | New-AzConnectedMachineExtension -Name custom -ResourceGroupName rg1 -MachineName important
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'PUT' -and $Path -eq "$script:Rp/machines/important/extensions/custom" -and
            $Body.location -eq 'eastus' -and $Body.properties.type -eq 'CustomScriptExtension' -and
            $Body.properties.settings.commandToExecute -eq 'hostname' -and -not $Body.properties.Contains('provisioningState')
        }
    }

    It 'New: CreateViaIdentityExpanded with an identity hashtable piped in (Az help example 3)' {
        $identity = @{ Id = "$script:Rp/machines/m1/extensions/custom" }
        $null = $identity | New-AzConnectedMachineExtension -Location eastus -Publisher 'Microsoft.Compute' -TypeHandlerVersion 1.10 -Settings @{ commandToExecute = 'hostname' } -ExtensionType CustomScriptExtension
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'PUT' -and $Path -eq "$script:Rp/machines/m1/extensions/custom" -and $Body.properties.typeHandlerVersion -eq '1.10'
        }
    }

    It 'New: CreateViaIdentity with -ExtensionParameter (Az help example 4)' {
        $ext = Get-AzConnectedMachineExtension -Name custom -ResourceGroupName rg1 -MachineName other
        $null = $ext | New-AzConnectedMachineExtension -ExtensionParameter $ext
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'PUT' -and $Path -eq "$script:Rp/machines/other/extensions/custom"
        }
    }

    It 'New: CreateViaIdentityMachine with a machine piped in and a hashtable body without Location' {
        $machine = @{ Id = "$script:Rp/machines/m2" }
        $null = $machine | New-AzConnectedMachineExtension -Name ama -ExtensionParameter @{ Publisher = 'Microsoft.Azure.Monitor'; MachineExtensionType = 'AzureMonitorWindowsAgent' }
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'PUT' -and $Path -eq "$script:Rp/machines/m2/extensions/ama" -and $Body.location -eq 'westeurope' -and
            $Body.properties.type -eq 'AzureMonitorWindowsAgent'
        }
    }

    It 'Set: Update with an extension of another machine piped in (Az help example 2)' {
        $otherExtension = Get-AzConnectedMachineExtension -Name custom -ResourceGroupName rg1 -MachineName other
        $null = $otherExtension | Set-AzConnectedMachineExtension -Name custom -ResourceGroupName rg1 -MachineName important
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'PUT' -and $Path -eq "$script:Rp/machines/important/extensions/custom" -and $Body.tags.env -eq 'test'
        }
    }

    It 'Set: takes an ARM-shaped hashtable as -ExtensionParameter' {
        $null = Set-AzConnectedMachineExtension -Name custom -ResourceGroupName rg1 -MachineName m1 -ExtensionParameter @{ location = 'eastus'; properties = @{ publisher = 'P'; type = 'T' } }
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'PUT' -and $Body.location -eq 'eastus' -and $Body.properties.publisher -eq 'P' -and $Body.properties.type -eq 'T'
        }
    }

    It 'Update: the four examples of Az''s help' {
        $splat = @{ ResourceGroupName = 'rg1'; MachineName = 'm1'; Name = 'custom'; Settings = @{ commandToExecute = 'ls -l' } }
        $null = Update-AzConnectedMachineExtension @splat

        $extToUpdate = Get-AzConnectedMachineExtension -ResourceGroupName rg1 -MachineName m1 -Name custom
        $null = $extToUpdate | Update-AzConnectedMachineExtension -Settings @{ commandToExecute = 'ls -l' }

        $extToUpdate.Setting.commandToExecute = 'ls -l'
        $splat = @{ ResourceGroupName = 'rg1'; MachineName = 'm1'; Name = 'custom' }
        $null = $extToUpdate | Update-AzConnectedMachineExtension @splat

        $null = $extToUpdate | Update-AzConnectedMachineExtension -ExtensionParameter $extToUpdate

        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 4 -Exactly -ParameterFilter {
            $Method -eq 'PATCH' -and $Path -eq "$script:Rp/machines/m1/extensions/custom" -and $Body.properties.settings.commandToExecute -eq 'ls -l'
        }
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 0 -Exactly -ParameterFilter {
            $Method -eq 'PATCH' -and $Body.Contains('location')
        }
    }

    It 'Update-AzConnectedExtension: UpgradeViaIdentity with -InputObject and -ExtensionUpgradeParameter' {
        $upgrade = @{ ExtensionTarget = @{ 'Microsoft.Compute.CustomScriptExtension' = @{ targetVersion = '1.10.2' } } }
        Update-AzConnectedExtension -InputObject "$script:Rp/machines/m1" -ExtensionUpgradeParameter $upgrade -PassThru | Should -BeTrue
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'POST' -and $Path -eq "$script:Rp/machines/m1/upgradeExtensions" -and
            $Body.extensionTargets['Microsoft.Compute.CustomScriptExtension'].targetVersion -eq '1.10.2'
        }
    }
}

Describe 'Identity parameters take what Az''s take (item 3)' {
    BeforeAll { Mock -ModuleName AzConnectedMachineShim Invoke-ArcRequest $script:Answer }

    It 'takes <Kind> as -InputObject' -ForEach @(
        @{ Kind = 'an id string'; Value = '/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/m1/extensions/custom' }
        @{ Kind = 'a hashtable with Id'; Value = @{ Id = '/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/m1/extensions/custom' } }
        @{ Kind = 'a hashtable of names'; Value = @{ SubscriptionId = '00000000-0000-0000-0000-000000000000'; ResourceGroupName = 'rg1'; MachineName = 'm1'; ExtensionName = 'custom' } }
        @{ Kind = 'an object with Id'; Value = [pscustomobject]@{ Id = '/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/m1/extensions/custom' } }
    ) {
        $null = Update-AzConnectedMachineExtension -InputObject $Value -EnableAutomaticUpgrade:$false
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'PATCH' -and $Path -eq "$script:Rp/machines/m1/extensions/custom"
        }
    }

    It 'takes a hashtable without SubscriptionId as -MachineInputObject (the default subscription)' {
        Remove-AzConnectedMachineExtension -MachineInputObject @{ ResourceGroupName = 'rg1'; MachineName = 'm1' } -Name custom -PassThru | Should -BeTrue
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'DELETE' -and $Path -eq "$script:Rp/machines/m1/extensions/custom"
        }
    }

    It 'says what is missing when the object names no extension' {
        { Update-AzConnectedMachineExtension -InputObject @{ ResourceGroupName = 'rg1'; MachineName = 'm1' } -EnableAutomaticUpgrade -ErrorAction Stop } |
            Should -Throw -ErrorId 'InvalidInputObjectId*'
    }
}

Describe 'DefaultProfile and the hidden runtime parameters (item 4)' {
    BeforeAll { Mock -ModuleName AzConnectedMachineShim Invoke-ArcRequest $script:Answer }

    It 'binds -DefaultProfile and its aliases, -Break and -HttpPipelinePrepend, and ignores them' {
        $null = Get-AzConnectedMachineExtension -ResourceGroupName rg1 -MachineName m1 -Name custom -DefaultProfile ([pscustomobject]@{}) -Break -HttpPipelinePrepend @({ 'step' })
        $null = Get-AzConnectedMachine -ResourceGroupName rg1 -Name m1 -AzureRMContext ([pscustomobject]@{})
        $null = Get-AzConnectedMachine -ResourceGroupName rg1 -Name m1 -AzureCredential ([pscustomobject]@{}) -HttpPipelineAppend @({ 'step' })
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 3 -Exactly
    }

    It 'applies -Proxy, -ProxyCredential and -ProxyUseDefaultCredentials to the request' {
        $credential = [pscredential]::new('proxyuser', (ConvertTo-SecureString -String 'p' -AsPlainText -Force))
        $null = Update-AzConnectedMachineExtension -ResourceGroupName rg1 -MachineName m1 -Name custom -EnableAutomaticUpgrade -Proxy 'http://proxy.example:3128' -ProxyCredential $credential
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $ProxySetting.Proxy -eq [uri]'http://proxy.example:3128' -and $ProxySetting.ProxyCredential.UserName -eq 'proxyuser'
        }
        $null = Get-AzConnectedMachineExtension -ResourceGroupName rg1 -MachineName m1 -Name custom -Proxy 'http://proxy.example:3128' -ProxyUseDefaultCredentials
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $ProxySetting.ProxyUseDefaultCredentials -eq $true
        }
    }
}

Describe 'Invoke-ArcRequest passes the proxy to Invoke-WebRequest (item 4)' {
    It 'sends -Proxy and -ProxyCredential with every exchange' {
        Mock -ModuleName AzConnectedMachineShim Invoke-WebRequest {
            [pscustomobject]@{ StatusCode = 200; Headers = @{}; Content = '{"id":"x"}' }
        }
        InModuleScope AzConnectedMachineShim {
            $null = Invoke-ArcRequest -Method GET -Path '/subscriptions/s/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/m1' -ProxySetting @{ Proxy = [uri]'http://proxy.example:3128' }
        }
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-WebRequest -Times 1 -Exactly -ParameterFilter { $Proxy -eq [uri]'http://proxy.example:3128' }
    }
}

Describe 'Output objects: Tags, Tag, and Az''s table (item 5)' {
    BeforeAll { Mock -ModuleName AzConnectedMachineShim Invoke-ArcRequest $script:Answer }

    It 'writes Tags, with Tag as an alias property' {
        $ext = Get-AzConnectedMachineExtension -ResourceGroupName rg1 -MachineName m1 -Name custom
        $ext.Tags.env | Should -Be 'test'
        $ext.Tag.env | Should -Be 'test'
        $ext.PSObject.Properties['Tag'].MemberType | Should -Be 'AliasProperty'
    }

    It 'shows Az''s columns by default and EnableAutomaticUpgrade by name' {
        $ext = Get-AzConnectedMachineExtension -ResourceGroupName rg1 -MachineName m1 -Name custom
        ($ext | Out-String) | Should -Match 'ResourceGroupName\s+Name\s+Location\s+TypeHandlerVersion\s+ProvisioningState\s+Publisher'
        # the Arc documentation's Format-Table line, as a script would write it
        $line = 'Get-AzConnectedMachineExtension -ResourceGroup rg1 -MachineName m1 -Name custom | Format-Table Name, EnableAutomaticUpgrade'
        (& ([scriptblock]::Create($line)) | Out-String) | Should -Match 'custom\s+True'
    }
}

Describe 'Scripts that require Az.ConnectedMachine and use Set-AzContext (item 6)' {
    BeforeAll {
        $script:SavedPath = $env:PSModulePath
        $env:PSModulePath = (Join-Path $script:ModuleRoot 'compat') + [IO.Path]::PathSeparator + $env:PSModulePath
    }
    AfterAll {
        $env:PSModulePath = $script:SavedPath
        Remove-Module -Name 'Az.ConnectedMachine' -Force -ErrorAction SilentlyContinue
    }

    It 'runs a script that starts with #Requires -Modules Az.ConnectedMachine' {
        $script = Join-Path $TestDrive 'uses-az.ps1'
        Set-Content -LiteralPath $script -Value @(
            '#Requires -Modules Az.ConnectedMachine'
            '(Get-Command Update-AzConnectedMachineExtension).Source'
        )
        $source = & $script
        $source | Should -BeIn @('AzConnectedMachineShim', 'Az.ConnectedMachine')
        (Get-Module -Name 'Az.ConnectedMachine').ModuleBase | Should -Be (Resolve-Path (Join-Path $script:ModuleRoot 'compat/Az.ConnectedMachine')).Path
    }

    It 'defines Set-AzContext / Get-AzContext when Az.Accounts is absent' -Skip:([bool](Get-Module -ListAvailable -Name Az.Accounts)) {
        Import-Module Az.ConnectedMachine -Force
        $null = Set-AzContext -Subscription '11111111-1111-1111-1111-111111111111'
        (Get-AzContext).Subscription.Id | Should -Be '11111111-1111-1111-1111-111111111111'
    }

    It 'takes the default subscription from the Az context when Connect-Arcext set none' {
        function global:Get-AzContext { [pscustomobject]@{ Subscription = [pscustomobject]@{ Id = '22222222-2222-2222-2222-222222222222' } } }
        try {
            InModuleScope AzConnectedMachineShim {
                $saved = $script:ArcShimContext
                $script:ArcShimContext = [pscustomobject]@{ Endpoint = $saved.Endpoint; Token = $saved.Token; SubscriptionId = $null; SkipCertificateCheck = $false }
                try {
                    Resolve-ArcSubscriptionId | Should -Be '22222222-2222-2222-2222-222222222222'
                    Resolve-ArcSubscriptionId -SubscriptionId '33333333-3333-3333-3333-333333333333' | Should -Be '33333333-3333-3333-3333-333333333333'
                }
                finally {
                    $script:ArcShimContext = $saved
                }
                # a subscription given to Connect-Arcext wins over the Az context
                Resolve-ArcSubscriptionId | Should -Be '00000000-0000-0000-0000-000000000000'
            }
        }
        finally {
            Remove-Item -Path function:global:Get-AzContext -ErrorAction SilentlyContinue
        }
    }
}

Describe 'arcext''s own cmdlets have arcext names, the old ones are aliases (item 7)' {
    It 'exports <Alias> as an alias of <Target>' -ForEach @(
        @{ Alias = 'Connect-AzConnectedMachineShim'; Target = 'Connect-Arcext' }
        @{ Alias = 'Disconnect-AzConnectedMachineShim'; Target = 'Disconnect-Arcext' }
        @{ Alias = 'Get-AzConnectedMachineExtensionUpgradeHistory'; Target = 'Get-ArcextExtensionUpgradeHistory' }
    ) {
        $command = Get-Command -Name $Alias -Module AzConnectedMachineShim
        $command.CommandType | Should -Be 'Alias'
        $command.ResolvedCommand.Name | Should -Be $Target
    }

    It 'exports no Az-prefixed cmdlet that Az.ConnectedMachine does not have' {
        $own = (Get-Command -Module AzConnectedMachineShim -CommandType Function).Name | Where-Object { $_ -like '*-Az*' }
        $own | Sort-Object -Unique | Should -Be @(
            'Get-AzConnectedExtensionMetadata', 'Get-AzConnectedMachine', 'Get-AzConnectedMachineExtension',
            'New-AzConnectedMachineExtension', 'Remove-AzConnectedMachineExtension', 'Set-AzConnectedMachineExtension',
            'Update-AzConnectedExtension', 'Update-AzConnectedMachineExtension'
        )
    }
}
