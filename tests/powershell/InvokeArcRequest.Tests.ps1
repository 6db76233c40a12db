#Requires -Version 7.2
# Unit tests of the private HTTP helper (Invoke-ArcRequest) through the public cmdlets, with Invoke-WebRequest
# mocked: whole recorded Azure exchanges (fixtures/az-recordings) are replayed in order, so the long-running
# operation loop (Retry-After, Azure-AsyncOperation, Location, final GET), the api-version, the bearer token
# and the ARM error mapping are exercised against real wire data.

BeforeAll {
    Import-Module (Join-Path $PSScriptRoot '../../AzConnectedMachineShim/AzConnectedMachineShim.psd1') -Force -ErrorAction Stop
    Import-Module (Join-Path $PSScriptRoot 'ShimTestHelpers.psm1') -Force -ErrorAction Stop

    # Subscription and endpoint of the recordings.
    $script:Sub = 'b24cc8ee-df4f-48ac-94cf-46edf36b0fae'
    $script:Endpoint = 'https://management.azure.com'
    $script:ExtensionPath = "/subscriptions/$script:Sub/resourceGroups/ytongtest/providers/Microsoft.HybridCompute/machines/testmachine/extensions/networkWatcher"
    $script:Token = ConvertTo-SecureString -String 'unit-test-token' -AsPlainText -Force
}

AfterAll {
    Remove-Module -Name 'AzConnectedMachineShim', 'ShimTestHelpers' -Force -ErrorAction SilentlyContinue
}

Describe 'Invoke-ArcRequest' {
    BeforeEach {
        Connect-Arcext -Endpoint $script:Endpoint -Token $script:Token -SubscriptionId $script:Sub
        Mock -ModuleName AzConnectedMachineShim Start-Sleep -MockWith { $null }
        Mock -ModuleName AzConnectedMachineShim Invoke-WebRequest {
            Invoke-RecordedExchange -Method $Method -Uri $Uri -Body $Body -Headers $Headers
        }
    }

    Context 'long-running PUT (New-AzConnectedMachineExtension recording)' {
        BeforeEach {
            Set-RecordedExchange -Entry @(Get-AzRecording -Name New-AzConnectedMachineExtension)
            $script:Result = New-AzConnectedMachineExtension -Name networkWatcher -ResourceGroupName ytongtest -MachineName testmachine -Location eastus `
                -Publisher Microsoft.Azure.NetworkWatcher -ExtensionType NetworkWatcherAgentWindows -TypeHandlerVersion 1.4.2798.3 -Setting @{ CommandToExecute = 'dir' }
            $script:Requests = @(Get-RecordedRequest)
        }

        It 'replays every recorded exchange: PUT, polls of Azure-AsyncOperation, final GET of the resource' {
            Get-RemainingExchangeCount | Should -Be 0
            $script:Requests[0].Method | Should -Be 'PUT'
            $script:Requests[1].Uri.AbsolutePath | Should -BeLike '*/operationstatus/*'
            $script:Requests[-1].Method | Should -Be 'GET'
            $script:Requests[-1].Uri.AbsolutePath | Should -Be $script:ExtensionPath
            $script:Result.ProvisioningState | Should -Be 'Succeeded'
            $script:Result.Name | Should -Be 'networkWatcher'
        }

        It 'waits Retry-After seconds between polls (15 in the recording)' {
            Should -Invoke -ModuleName AzConnectedMachineShim Start-Sleep -Times 3 -Exactly -ParameterFilter { $Seconds -eq 15 }
        }

        It 'sends api-version 2024-07-10, the bearer token and the recorded body' {
            $script:Requests[0].Uri.Query | Should -Be '?api-version=2024-07-10'
            $script:Requests[0].Headers['Authorization'] | Should -Be 'Bearer unit-test-token'
            $recorded = Get-AzRecording -Name New-AzConnectedMachineExtension | Select-Object -First 1
            ConvertTo-CanonicalJson -Json $script:Requests[0].Body | Should -Be (ConvertTo-CanonicalJson -Json $recorded.RequestBody)
            foreach ($request in $script:Requests) {
                $request.Headers['Authorization'] | Should -Be 'Bearer unit-test-token'
            }
        }
    }

    Context 'long-running DELETE (Remove-AzConnectedMachineExtension recording)' {
        It 'polls until Succeeded and makes no final GET' {
            Set-RecordedExchange -Entry @(Get-AzRecording -Name Remove-AzConnectedMachineExtension)
            Remove-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine -Name networkWatcher -PassThru | Should -BeTrue
            Get-RemainingExchangeCount | Should -Be 0
            @(Get-RecordedRequest).Count | Should -Be 4
            Should -Invoke -ModuleName AzConnectedMachineShim Start-Sleep -Times 3 -Exactly -ParameterFilter { $Seconds -eq 15 }
        }

        It 'returns after the first response with -NoWait' {
            Set-RecordedExchange -Entry @(Get-AzRecording -Name Remove-AzConnectedMachineExtension | Select-Object -First 1)
            Remove-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine -Name networkWatcher -NoWait -PassThru | Should -BeTrue
            @(Get-RecordedRequest).Count | Should -Be 1
            Should -Invoke -ModuleName AzConnectedMachineShim Start-Sleep -Times 0 -Exactly
        }
    }

    Context 'long-running POST (Update-AzConnectedExtension recording)' {
        It 'waits Retry-After (300), polls, then GETs the Location link' {
            Set-RecordedExchange -Entry @(Get-AzRecording -Name Update-AzConnectedExtension)
            $target = @{ 'Microsoft.Azure.NetworkWatcher' = @{ targetVersion = '1.4.3135.1' } }
            Update-AzConnectedExtension -ResourceGroupName ytongtest -MachineName testmachine -ExtensionTarget $target -PassThru | Should -BeTrue
            Get-RemainingExchangeCount | Should -Be 0
            (Get-RecordedRequest)[-1].Uri.AbsolutePath | Should -BeLike '*/operationresults/*'
            Should -Invoke -ModuleName AzConnectedMachineShim Start-Sleep -Times 1 -Exactly -ParameterFilter { $Seconds -eq 300 }
        }
    }

    Context 'links to another host' {
        It 'rebases Azure-AsyncOperation links onto the configured endpoint, so the token stays there' {
            Connect-Arcext -Endpoint 'http://127.0.0.1:5999' -Token $script:Token -SubscriptionId $script:Sub
            Set-RecordedExchange -Entry @(Get-AzRecording -Name New-AzConnectedMachineExtension)
            $null = New-AzConnectedMachineExtension -Name networkWatcher -ResourceGroupName ytongtest -MachineName testmachine -Location eastus
            foreach ($request in Get-RecordedRequest) {
                $request.Uri.GetLeftPart([System.UriPartial]::Authority) | Should -Be 'http://127.0.0.1:5999'
            }
        }
    }

    Context 'paging' {
        It 'follows nextLink until it is absent' {
            $first = [pscustomobject]@{ Key = 'p1'; Method = 'GET'; Uri = ''; Path = "/subscriptions/$script:Sub/resourceGroups/ytongtest/providers/Microsoft.HybridCompute/machines/testmachine/extensions"
                RequestBody = $null; StatusCode = 200; Headers = @{}
                Content = '{"value":[{"id":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/m/extensions/a","name":"a"}],"nextLink":"https://management.azure.com/next/page?api-version=2024-07-10&skip=1"}' }
            $second = [pscustomobject]@{ Key = 'p2'; Method = 'GET'; Uri = ''; Path = '/next/page'; RequestBody = $null; StatusCode = 200; Headers = @{}
                Content = '{"value":[{"id":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/m/extensions/b","name":"b"}]}' }
            Set-RecordedExchange -Entry @($first, $second)
            $result = @(Get-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine)
            $result.Name | Should -Be @('a', 'b')
            (Get-RecordedRequest)[1].Uri.Query | Should -Be '?api-version=2024-07-10&skip=1'
        }
    }

    Context 'ARM errors become ErrorRecords' {
        It 'maps the recorded 404 ResourceNotFound to ObjectNotFound' {
            $notFound = Get-AzRecording -Name Remove-AzConnectedMachine | Where-Object StatusCode -EQ 404 | Select-Object -First 1
            Set-RecordedExchange -Entry @($notFound)
            Get-AzConnectedMachine -ResourceGroupName az-sdk-test -Name testmachine -SubscriptionId e6fe6705-4c9c-4b54-81d2-e455780e20b8 -ErrorVariable err -ErrorAction SilentlyContinue |
                Should -BeNullOrEmpty
            $err.Count | Should -Be 1
            $err[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
            $err[0].FullyQualifiedErrorId | Should -BeLike 'ResourceNotFound,*'
            $err[0].Exception | Should -BeOfType ([System.Net.Http.HttpRequestException])
            $err[0].Exception.StatusCode | Should -Be ([System.Net.HttpStatusCode]::NotFound)
            $err[0].ErrorDetails.Message | Should -BeLike "*The Resource 'Microsoft.HybridCompute/machines/testmachine'*"
        }

        It 'maps HTTP <Status> <Code> to <Category>' -TestCases @(
            @{ Status = 400; Code = 'MissingApiVersionParameter'; Category = 'InvalidArgument' }
            @{ Status = 401; Code = 'AuthenticationFailed'; Category = 'PermissionDenied' }
            @{ Status = 403; Code = 'AuthorizationFailed'; Category = 'PermissionDenied' }
            @{ Status = 409; Code = 'Conflict'; Category = 'ResourceExists' }
            @{ Status = 500; Code = 'InternalServerError'; Category = 'ConnectionError' }
            @{ Status = 503; Code = 'ServiceUnavailable'; Category = 'ConnectionError' }
        ) {
            $answer = [pscustomobject]@{ Key = 'e'; Method = 'GET'; Uri = ''; Path = $script:ExtensionPath; RequestBody = $null; StatusCode = $Status; Headers = @{}
                Content = (@{ error = @{ code = $Code; message = "synthetic $Code"; target = 'extensionName' } } | ConvertTo-Json -Compress) }
            Set-RecordedExchange -Entry @($answer)
            Get-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine -Name networkWatcher -ErrorVariable err -ErrorAction SilentlyContinue
            $err[0].CategoryInfo.Category | Should -Be $Category
            $err[0].FullyQualifiedErrorId | Should -BeLike "$Code,*"
            $err[0].TargetObject | Should -Be 'extensionName'
            $err[0].Exception.Data['ArmErrorCode'] | Should -Be $Code
        }

        It 'is terminating with -ErrorAction Stop' {
            $answer = [pscustomobject]@{ Key = 'e'; Method = 'GET'; Uri = ''; Path = $script:ExtensionPath; RequestBody = $null; StatusCode = 404; Headers = @{}
                Content = '{"error":{"code":"ResourceNotFound","message":"gone"}}' }
            Set-RecordedExchange -Entry @($answer)
            { Get-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine -Name networkWatcher -ErrorAction Stop } |
                Should -Throw -ErrorId 'ResourceNotFound,*'
        }

        It 'reports a Failed operation with its error code' {
            $accepted = Get-AzRecording -Name New-AzConnectedMachineExtension | Select-Object -First 1
            $failed = [pscustomobject]@{ Key = 'f'; Method = 'GET'; Uri = ''; Path = ([uri]$accepted.Headers['Azure-AsyncOperation']).AbsolutePath; RequestBody = $null
                StatusCode = 200; Headers = @{}; Content = '{"name":"op","status":"Failed","error":{"code":"ExtensionOperationFailed","message":"install failed"}}' }
            Set-RecordedExchange -Entry @($accepted, $failed)
            New-AzConnectedMachineExtension -Name networkWatcher -ResourceGroupName ytongtest -MachineName testmachine -Location eastus -ErrorVariable err -ErrorAction SilentlyContinue
            $err[0].FullyQualifiedErrorId | Should -BeLike 'ExtensionOperationFailed,*'
            $err[0].CategoryInfo.Category | Should -Be 'InvalidResult'
        }

        It 'reports an unreachable endpoint as ConnectionError' {
            Mock -ModuleName AzConnectedMachineShim Invoke-WebRequest { throw [System.Net.Http.HttpRequestException]::new('Connection refused') }
            Get-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine -ErrorVariable err -ErrorAction SilentlyContinue
            $err[0].CategoryInfo.Category | Should -Be 'ConnectionError'
            $err[0].FullyQualifiedErrorId | Should -BeLike 'ArcEndpointUnreachable,*'
        }
    }

    Context 'connection from the environment' {
        BeforeEach {
            $script:SavedEnvironment = @{}
            foreach ($name in 'ARCEXT_ENDPOINT', 'ARCEXT_TOKEN', 'ARCEXT_SUBSCRIPTION_ID') {
                $script:SavedEnvironment[$name] = [Environment]::GetEnvironmentVariable($name)
            }
            Disconnect-Arcext
        }

        AfterEach {
            foreach ($name in $script:SavedEnvironment.Keys) {
                [Environment]::SetEnvironmentVariable($name, $script:SavedEnvironment[$name])
            }
        }

        It 'uses ARCEXT_ENDPOINT, ARCEXT_TOKEN and ARCEXT_SUBSCRIPTION_ID without Connect' {
            $env:ARCEXT_ENDPOINT = 'http://127.0.0.1:5998/'
            $env:ARCEXT_TOKEN = 'env-token'
            $env:ARCEXT_SUBSCRIPTION_ID = $script:Sub
            Set-RecordedExchange -Entry @(Get-AzRecording -Name Get-AzConnectedMachineExtension | Where-Object Key -Like '*+Get+*')
            $null = Get-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine -Name networkWatcher
            $request = (Get-RecordedRequest)[0]
            $request.Uri.GetLeftPart([System.UriPartial]::Authority) | Should -Be 'http://127.0.0.1:5998'
            $request.Headers['Authorization'] | Should -Be 'Bearer env-token'
        }

        It 'says how to connect when nothing is configured' {
            $env:ARCEXT_ENDPOINT = $null
            $env:ARCEXT_TOKEN = $null
            $env:ARCEXT_SUBSCRIPTION_ID = $script:Sub
            { Get-AzConnectedMachineExtension -ResourceGroupName ytongtest -MachineName testmachine -ErrorAction Stop } | Should -Throw -ErrorId 'ArcShimNotConnected,*'
        }
    }
}
