#Requires -Version 7.2
# Unit tests of the public cmdlets: the module's HTTP helper (Invoke-ArcRequest) is mocked and answers with
# responses recorded from real Azure (fixtures/az-recordings). Each test checks the request a cmdlet builds
# (method, ARM path, body) and the object it writes.

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot '../../AzConnectedMachineShim/AzConnectedMachineShim.psd1') -Force -ErrorAction Stop
    Import-Module (Join-Path $PSScriptRoot 'ShimTestHelpers.psm1') -Force -ErrorAction Stop

    # Subscription and endpoint of the recordings.
    $script:Sub = 'b24cc8ee-df4f-48ac-94cf-46edf36b0fae'
    $script:Endpoint = 'https://management.azure.com'
    $script:Rp = "/subscriptions/$script:Sub/resourceGroups/ytongtest/providers/Microsoft.HybridCompute"
    $script:ExtensionPath = "$script:Rp/machines/testmachine/extensions/networkWatcher"
    $token = ConvertTo-SecureString -String 'unit-test-token' -AsPlainText -Force
    Connect-Arcext -Endpoint $script:Endpoint -Token $token -SubscriptionId $script:Sub
}

AfterAll {
    Remove-Module -Name 'AzConnectedMachineShim', 'ShimTestHelpers' -Force -ErrorAction SilentlyContinue
}

Describe 'Get-AzConnectedMachineExtension' {
    BeforeAll {
        Mock -ModuleName AzConnectedMachineShim Invoke-ArcRequest {
            $set = if ($Path -like '*/extensions') { '*+List+*' } else { '*+Get+*' }
            Get-AzRecording -Name Get-AzConnectedMachineExtension | Where-Object Key -Like $set | ConvertTo-ArcResponse
        }
    }

    It 'lists the extensions of a machine (List set) with Az property names' {
        $result = @(Get-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine)

        $result.Count | Should -Be 1
        $result[0].PSObject.TypeNames[0] | Should -Be 'AzConnectedMachineShim.MachineExtension'
        $result[0].Name | Should -Be 'networkWatcher'
        $result[0].ResourceGroupName | Should -Be 'ytongtest'
        $result[0].MachineName | Should -Be 'testmachine'
        $result[0].Publisher | Should -Be 'Microsoft.Azure.NetworkWatcher'
        $result[0].MachineExtensionType | Should -Be 'NetworkWatcherAgentWindows'
        $result[0].TypeHandlerVersion | Should -Be '1.4.2798.3'
        $result[0].EnableAutomaticUpgrade | Should -BeTrue
        $result[0].AutoUpgradeMinorVersion | Should -BeFalse
        $result[0].ProvisioningState | Should -Be 'Succeeded'
        $result[0].Setting['CommandToExecute'] | Should -Be 'dir'
        $result[0].StatusLevel | Should -Be 'Information'
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'GET' -and $Path -eq "$script:Rp/machines/testmachine/extensions"
        }
    }

    It 'gets one extension by name (Get set)' {
        $result = Get-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine -Name networkWatcher
        $result.Id | Should -Be $script:ExtensionPath
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'GET' -and $Path -eq $script:ExtensionPath
        }
    }

    It 'runs the first Arc documentation line (-ResourceGroup prefix, Format-Table)' {
        # The line as the Arc documentation prints it, with the recorded names filled in.
        $line = 'Get-AzConnectedMachineExtension -ResourceGroup resourceGroupName -MachineName machineName | Format-Table Name, EnableAutomaticUpgrade'
        $table = & ([scriptblock]::Create($line.Replace('resourceGroupName', 'ytongtest').Replace('machineName', 'testmachine'))) | Out-String
        $table | Should -Match 'Name\s+EnableAutomaticUpgrade'
        $table | Should -Match 'networkWatcher\s+True'
    }

    It 'uses the default table view of Az (issue #13, item 5)' {
        $table = Get-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine | Out-String
        $table | Should -Match 'ResourceGroupName\s+Name\s+Location\s+TypeHandlerVersion\s+ProvisioningState\s+Publisher'
        $table | Should -Not -Match 'EnableAutomaticUpgrade'
    }

    It 'takes -SubscriptionId over the default subscription' {
        $null = Get-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine -SubscriptionId 11111111-1111-1111-1111-111111111111
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Path -like '/subscriptions/11111111-1111-1111-1111-111111111111/*'
        }
    }
}

Describe 'Update-AzConnectedMachineExtension' {
    BeforeAll {
        Mock -ModuleName AzConnectedMachineShim Invoke-ArcRequest {
            if ($Method -eq 'GET' -and $Path -like '*/extensions') {
                Get-AzRecording -Name Get-AzConnectedMachineExtension | Where-Object Key -Like '*+List+*' | ConvertTo-ArcResponse
            }
            else {
                # The final GET of the recorded LRO returns the resource; a server that leaked protectedSettings is simulated.
                $response = Get-AzRecording -Name New-AzConnectedMachineExtension | Select-Object -Last 1 | ConvertTo-ArcResponse
                $response.Body['properties']['protectedSettings'] = @{ secret = 'leaked' }
                $response
            }
        }
    }

    It 'runs the second Arc documentation line: -EnableAutomaticUpgrade sends true' {
        $result = Update-AzConnectedMachineExtension -ResourceGroup ytongtest -MachineName testmachine -Name networkWatcher -EnableAutomaticUpgrade
        $result.Name | Should -Be 'networkWatcher'
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'PATCH' -and $Path -eq $script:ExtensionPath -and $LongRunning -and
            ($Body | ConvertTo-Json -Depth 10 -Compress) -eq '{"properties":{"enableAutomaticUpgrade":true}}'
        }
    }

    It 'runs the third Arc documentation line: -EnableAutomaticUpgrade:$false sends false' {
        $null = Update-AzConnectedMachineExtension -ResourceGroup ytongtest -MachineName testmachine -Name networkWatcher -EnableAutomaticUpgrade:$false
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'PATCH' -and ($Body | ConvertTo-Json -Depth 10 -Compress) -eq '{"properties":{"enableAutomaticUpgrade":false}}'
        }
    }

    It 'sends nothing about automatic upgrade when the switch is left out' {
        $null = Update-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine -Name networkWatcher -Setting @{ CommandToExecute = 'hostname' }
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'PATCH' -and ($Body | ConvertTo-Json -Depth 10 -Compress) -eq '{"properties":{"settings":{"CommandToExecute":"hostname"}}}'
        }
    }

    It 'takes extensions from the pipeline (Get-... | Update-...)' {
        $result = Get-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine | Update-AzConnectedMachineExtension -EnableAutomaticUpgrade:$false
        $result.Name | Should -Be 'networkWatcher'
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'PATCH' -and $Path -eq $script:ExtensionPath
        }
    }

    It 'honours -WhatIf' {
        Update-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine -Name networkWatcher -EnableAutomaticUpgrade -WhatIf
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 0 -Exactly -ParameterFilter { $Method -eq 'PATCH' }
    }

    It 'sends -TypeHandlerVersion in the PATCH, as Az does, without a warning (issue #13, item 1)' {
        $null = Update-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine -Name networkWatcher -TypeHandlerVersion 2.0 -WarningVariable warnings
        $warnings | Should -BeNullOrEmpty
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'PATCH' -and ($Body | ConvertTo-Json -Depth 10 -Compress) -eq '{"properties":{"typeHandlerVersion":"2.0"}}'
        }
    }

    It 'sends -ProtectedSetting and never writes protected settings, even when a server returns them' {
        $result = Update-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine -Name networkWatcher -ProtectedSettings @{ secret = 's3cr3t' }
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'PATCH' -and $Body.properties.protectedSettings.secret -eq 's3cr3t'
        }
        $result.PSObject.Properties.Name | Where-Object { $_ -like '*protected*' } | Should -BeNullOrEmpty
        ($result | ConvertTo-Json -Depth 10) | Should -Not -Match 'leaked|s3cr3t'
    }

    It 'sends a JSON document as it is (UpdateViaJsonString)' {
        $null = Update-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine -Name networkWatcher -JsonString '{"properties":{"enableAutomaticUpgrade":false}}'
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'PATCH' -and $Body -eq '{"properties":{"enableAutomaticUpgrade":false}}'
        }
    }

    It 'rejects a JSON string that is not JSON, before any request' {
        Update-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine -Name networkWatcher -JsonString '{not json' -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].CategoryInfo.Category | Should -Be 'InvalidArgument'
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 0 -Exactly
    }
}

Describe 'New-AzConnectedMachineExtension and Set-AzConnectedMachineExtension' {
    BeforeAll {
        Mock -ModuleName AzConnectedMachineShim Invoke-ArcRequest {
            Get-AzRecording -Name New-AzConnectedMachineExtension | Select-Object -Last 1 | ConvertTo-ArcResponse
        }
    }

    It 'sends the same PUT body as Az.ConnectedMachine did in the recording' {
        $recorded = Get-AzRecording -Name New-AzConnectedMachineExtension | Select-Object -First 1
        $expected = ConvertTo-CanonicalJson -Json $recorded.RequestBody
        $result = New-AzConnectedMachineExtension -Name networkWatcher -ResourceGroupName ytongtest -MachineName testmachine -Location eastus `
            -Publisher Microsoft.Azure.NetworkWatcher -ExtensionType NetworkWatcherAgentWindows -TypeHandlerVersion 1.4.2798.3 -Setting @{ CommandToExecute = 'dir' }

        $result.ProvisioningState | Should -Be 'Succeeded'
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'PUT' -and $Path -eq $script:ExtensionPath -and $LongRunning -and ($Body | ConvertTo-Json -Depth 10 -Compress) -eq $expected
        }
    }

    It 'sends enableAutomaticUpgrade only when the switch is given' {
        $null = New-AzConnectedMachineExtension -Name ama -ResourceGroupName ytongtest -MachineName testmachine -Location eastus -EnableAutomaticUpgrade:$false -AutoUpgradeMinorVersion
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            ($Body | ConvertTo-Json -Depth 10 -Compress) -eq '{"location":"eastus","properties":{"enableAutomaticUpgrade":false,"autoUpgradeMinorVersion":true}}'
        }
    }

    It 'creates the extension on a piped machine (CreateViaIdentityMachineExpanded)' {
        $machine = Get-AzRecording -Name Get-AzConnectedMachine | Where-Object Key -Like '*+Get+*' | ConvertTo-ArcResponse
        $piped = & (Get-Module AzConnectedMachineShim) { param($b) $b | ConvertTo-ArcMachine } $machine.Body
        $null = $piped | New-AzConnectedMachineExtension -Name networkWatcher -Location eastus
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'PUT' -and $Path -eq $script:ExtensionPath
        }
    }

    It 'returns without waiting with -NoWait' {
        $null = New-AzConnectedMachineExtension -Name ama -ResourceGroupName ytongtest -MachineName testmachine -Location eastus -NoWait
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter { $NoWait }
    }

    It 'Set- replaces the extension with the recorded PUT body' {
        $recorded = Get-AzRecording -Name Set-AzConnectedMachineExtension | Select-Object -First 1
        $expected = ConvertTo-CanonicalJson -Json $recorded.RequestBody
        $null = Set-AzConnectedMachineExtension -Name networkWatcher -ResourceGroupName yao_test -MachineName LAPTOP-4GNU2K3H -Location eastus2euap `
            -Publisher Microsoft.Azure.NetworkWatcher -ExtensionType NetworkWatcherAgentWindows -TypeHandlerVersion 1.4.2798.3 -Settings @{ commandToExecute = 'powershell.exe ls' }
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'PUT' -and $Path -eq $recorded.Path -and ($Body | ConvertTo-Json -Depth 10 -Compress) -eq $expected
        }
    }
}

Describe 'Remove-AzConnectedMachineExtension' {
    BeforeAll {
        Mock -ModuleName AzConnectedMachineShim Invoke-ArcRequest {
            if ($Method -eq 'GET') {
                Get-AzRecording -Name Get-AzConnectedMachineExtension | Where-Object Key -Like '*+List+*' | ConvertTo-ArcResponse
            }
            else {
                Get-AzRecording -Name Remove-AzConnectedMachineExtension | Select-Object -Last 1 | ConvertTo-ArcResponse
            }
        }
    }

    It 'deletes by name and writes $true with -PassThru' {
        Remove-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine -Name networkWatcher -PassThru | Should -BeTrue
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'DELETE' -and $Path -eq $script:ExtensionPath -and $LongRunning
        }
    }

    It 'writes nothing without -PassThru' {
        Remove-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine -Name networkWatcher | Should -BeNullOrEmpty
    }

    It 'deletes piped extensions (DeleteViaIdentity) and honours -WhatIf' {
        Get-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine | Remove-AzConnectedMachineExtension -WhatIf
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 0 -Exactly -ParameterFilter { $Method -eq 'DELETE' }
        Get-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine | Remove-AzConnectedMachineExtension -Confirm:$false
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter { $Method -eq 'DELETE' -and $Path -eq $script:ExtensionPath }
    }
}

Describe 'Update-AzConnectedExtension' {
    BeforeAll {
        Mock -ModuleName AzConnectedMachineShim Invoke-ArcRequest {
            Get-AzRecording -Name Update-AzConnectedExtension | Select-Object -Last 1 | ConvertTo-ArcResponse
        }
    }

    It 'sends the recorded upgradeExtensions body and writes $true with -PassThru' {
        $recorded = Get-AzRecording -Name Update-AzConnectedExtension | Select-Object -First 1
        $expected = ConvertTo-CanonicalJson -Json $recorded.RequestBody
        $target = @{ 'Microsoft.Azure.NetworkWatcher' = @{ targetVersion = '1.4.3135.1' } }
        Update-AzConnectedExtension -ResourceGroupName ytongtest -MachineName testmachine -ExtensionTarget $target -PassThru | Should -BeTrue
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Method -eq 'POST' -and $Path -eq $recorded.Path -and $LongRunning -and ($Body | ConvertTo-Json -Depth 10 -Compress) -eq $expected
        }
    }

    It 'accepts a plain version string per target' {
        $null = Update-AzConnectedExtension -ResourceGroupName ytongtest -MachineName testmachine -ExtensionTarget @{ 'Microsoft.Azure.NetworkWatcher' = '1.4.3135.1' }
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            ($Body | ConvertTo-Json -Depth 10 -Compress) -eq '{"extensionTargets":{"Microsoft.Azure.NetworkWatcher":{"targetVersion":"1.4.3135.1"}}}'
        }
    }
}

Describe 'Get-AzConnectedMachine' {
    BeforeAll {
        Mock -ModuleName AzConnectedMachineShim Invoke-ArcRequest {
            $set = if ($Path -like '*/machines') { '*+List+*' } else { '*+Get+*' }
            Get-AzRecording -Name Get-AzConnectedMachine | Where-Object Key -Like $set | ConvertTo-ArcResponse
        }
    }

    It 'lists the machines of the subscription by default (List1)' {
        $result = @(Get-AzConnectedMachine)
        $result.Count | Should -Be 2
        $result[0].PSObject.TypeNames[0] | Should -Be 'AzConnectedMachineShim.Machine'
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Path -eq "/subscriptions/$script:Sub/providers/Microsoft.HybridCompute/machines"
        }
    }

    It 'gets one machine with -MachineName (alias of -Name)' {
        $result = Get-AzConnectedMachine -ResourceGroupName ytongtest -MachineName testmachine
        $result.Name | Should -Be 'testmachine'
        $result.Status | Should -Be 'Connected'
        $result.OSType | Should -Be 'windows'
        $result.ResourceGroupName | Should -Be 'ytongtest'
    }
}

Describe 'Get-AzConnectedExtensionMetadata' {
    BeforeAll {
        Mock -ModuleName AzConnectedMachineShim Invoke-ArcRequest {
            $set = if ($Path -like '*/versions') { '*+List+*' } else { '*+Get+*' }
            Get-AzRecording -Name Get-AzConnectedExtensionMetadata | Where-Object Key -Like $set | ConvertTo-ArcResponse
        }
    }

    It 'lists published versions' {
        $result = @(Get-AzConnectedExtensionMetadata -Location centraluseuap -Publisher Microsoft.Azure.NetworkWatcher -ExtensionType NetworkWatcherAgentWindows)
        $result.Count | Should -Be 2
        $result[0].PSObject.TypeNames[0] | Should -Be 'AzConnectedMachineShim.ExtensionValue'
        $result[0].ExtensionType | Should -Be 'networkwatcheragentwindows'
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Path -eq "/subscriptions/$script:Sub/providers/Microsoft.HybridCompute/locations/centraluseuap/publishers/Microsoft.Azure.NetworkWatcher/extensionTypes/NetworkWatcherAgentWindows/versions"
        }
    }

    It 'gets one version' {
        $result = Get-AzConnectedExtensionMetadata -Location eastus -Publisher Microsoft.Azure.NetworkWatcher -ExtensionType NetworkWatcherAgentWindows -Version 1.4.2798.3
        $result.Version | Should -Be '1.4.2798.3'
    }
}

Describe 'Get-ArcextExtensionUpgradeHistory' {
    BeforeAll {
        # Activity-log pages in the shape arcext serves (Azure Monitor event fields); no Azure recording exists for them.
        Mock -ModuleName AzConnectedMachineShim Invoke-ArcRequest {
            $id = "/subscriptions/$script:Sub/resourceGroups/ytongtest/providers/Microsoft.HybridCompute/machines/testmachine/extensions/networkWatcher"
            $upgrade = @{ value = 'Microsoft.HybridCompute/machines/upgradeExtensions/action'; localizedValue = 'Upgrade Extensions on Azure Arc machines' }
            if ($Path -notlike 'http*') {
                $page = @{
                    value    = @(
                        @{ operationName = $upgrade; caller = 'Azure Regional Service Manager'; status = @{ value = 'Succeeded' }; subStatus = @{ value = 'OK' }; level = 'Informational'
                            eventTimestamp = '2026-01-02T03:04:05Z'; correlationId = 'c1'; resourceId = $id
                            properties = @{ fromVersion = '1.4.2798.3'; toVersion = '1.4.3135.1'; lastKnownGoodVersion = '1.4.2798.3'; attempt = 1 } }
                        @{ operationName = @{ value = 'Microsoft.HybridCompute/machines/extensions/write' }; caller = 'someone'; status = @{ value = 'Succeeded' }
                            eventTimestamp = '2026-01-01T00:00:00Z'; resourceId = $id; properties = @{} }
                    )
                    nextLink = 'https://management.azure.com/page2?api-version=2015-04-01'
                }
            }
            else {
                $page = @{ value = @(
                        @{ operationName = $upgrade; caller = 'admin@contoso.test'; status = @{ value = 'Failed' }; level = 'Error'
                            eventTimestamp = '2026-01-03T00:00:00Z'; correlationId = 'c2'; resourceId = $id
                            properties = @{ fromVersion = '1.4.3135.1'; toVersion = '1.5.0'; lastKnownGoodVersion = '1.4.3135.1'; attempt = '2' } }
                    ) }
            }
            [pscustomobject]@{ StatusCode = 200; Headers = @{}; Body = ($page | ConvertTo-Json -Depth 10 | ConvertFrom-Json -AsHashtable); Uri = $Path }
        }
    }

    It 'reads upgrade events of the extension from the activity log, across pages' {
        $result = @(Get-ArcextExtensionUpgradeHistory -ResourceGroupName ytongtest -MachineName testmachine -Name networkWatcher)
        $result.Count | Should -Be 2
        $result[0].PSObject.TypeNames[0] | Should -Be 'AzConnectedMachineShim.ExtensionUpgradeEvent'
        $result[0].IsAutomatic | Should -BeTrue
        $result[0].FromVersion | Should -Be '1.4.2798.3'
        $result[0].ToVersion | Should -Be '1.4.3135.1'
        $result[0].ExtensionName | Should -Be 'networkWatcher'
        $result[1].IsAutomatic | Should -BeFalse
        $result[1].Attempt | Should -Be 2
        $result[1].Status | Should -Be 'Failed'
        Should -Invoke -ModuleName AzConnectedMachineShim Invoke-ArcRequest -Times 1 -Exactly -ParameterFilter {
            $Path -eq "/subscriptions/$script:Sub/providers/Microsoft.Insights/eventtypes/management/values" -and
            $ApiVersion -eq '2015-04-01' -and
            $Query['$filter'] -like "eventTimestamp ge '*' and eventTimestamp le '*' and resourceUri eq '$script:ExtensionPath'"
        }
    }

    It 'filters by caller' {
        $result = @(Get-ArcextExtensionUpgradeHistory -ResourceGroupName ytongtest -MachineName testmachine -Name networkWatcher -Caller 'Azure Regional Service Manager')
        $result.Count | Should -Be 1
        $result[0].IsAutomatic | Should -BeTrue
    }
}

Describe 'Connection' {
    It 'fails with ArcShimNoSubscription when no subscription is known' {
        InModuleScope AzConnectedMachineShim {
            $saved = $script:ArcShimContext
            $savedSubscription = $env:ARCEXT_SUBSCRIPTION_ID
            try {
                $script:ArcShimContext = [pscustomobject]@{ Endpoint = 'https://management.azure.com'; Token = $saved.Token; SubscriptionId = $null; SkipCertificateCheck = $false }
                $env:ARCEXT_SUBSCRIPTION_ID = $null
                { Get-AzConnectedMachineExtension -ResourceGroupName rg -MachineName m -ErrorAction Stop } | Should -Throw -ErrorId 'ArcShimNoSubscription*'
            }
            finally {
                $script:ArcShimContext = $saved
                $env:ARCEXT_SUBSCRIPTION_ID = $savedSubscription
            }
        }
    }

    It 'returns the connection without the token with -PassThru' {
        $token = ConvertTo-SecureString -String 'unit-test-token' -AsPlainText -Force
        $context = Connect-Arcext -Endpoint "$script:Endpoint/" -Token $token -SubscriptionId $script:Sub -PassThru
        $context.PSObject.TypeNames[0] | Should -Be 'AzConnectedMachineShim.Context'
        $context.Endpoint | Should -Be $script:Endpoint
        $context.PSObject.Properties.Name | Should -Not -Contain 'Token'
    }
}
