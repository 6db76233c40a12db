function Update-AzConnectedExtension {
    <#
    .SYNOPSIS
        Upgrades extensions of an Azure Arc-enabled machine to the given versions now (POST upgradeExtensions).
    .DESCRIPTION
        The manual upgrade of Azure Arc: for each "Publisher.Type" key of -ExtensionTarget, the extension of that
        type on the machine is upgraded to targetVersion, right away, initiated by the caller (the activity log
        records the token's principal). Same parameter sets as Az.ConnectedMachine: UpgradeExpanded (default),
        UpgradeViaIdentityExpanded (a machine piped in, with -ExtensionTarget), UpgradeViaIdentity (a machine
        as -InputObject with the whole request as -ExtensionUpgradeParameter), UpgradeViaJsonString and
        UpgradeViaJsonFilePath. -InputObject takes a machine object, any object with Id, a hashtable with Id or
        with SubscriptionId/ResourceGroupName/MachineName, or the machine id.
        The operation is long-running and waited for; -NoWait returns at once, -AsJob runs it as a job, and
        -PassThru writes $true when it succeeded.
    .PARAMETER MachineName
        The name of the machine.
    .PARAMETER ResourceGroupName
        The name of the resource group.
    .PARAMETER SubscriptionId
        The subscription id. Defaults to the connection's subscription.
    .PARAMETER InputObject
        A machine from Get-AzConnectedMachine (taken from the pipeline).
    .PARAMETER ExtensionTarget
        Hashtable keyed by "Publisher.Type", each value @{ targetVersion = 'x.y' } (a plain version string is
        accepted too), for example @{ 'Microsoft.Compute.CustomScriptExtension' = @{ targetVersion = '1.10.12' } }.
    .PARAMETER JsonString
        The MachineExtensionUpgrade request body as JSON text.
    .PARAMETER JsonFilePath
        Path of a file holding the MachineExtensionUpgrade request body as JSON.
    .PARAMETER AsJob
        Run the command as a job and return the job.
    .PARAMETER NoWait
        Return as soon as the server accepted the request, without waiting for the operation.
    .PARAMETER PassThru
        Write $true when the command succeeds.
    .PARAMETER WhatIf
        Show what would happen without sending the request.
    .PARAMETER Confirm
        Ask for confirmation before sending the request.
    .PARAMETER ExtensionUpgradeParameter
        The upgrade request as one object: a hashtable or object with ExtensionTarget (@{ '<publisher>.<type>' = @{ targetVersion = '<version>' } }). Taken from the pipeline.
    .PARAMETER DefaultProfile
        Accepted and ignored, as in Az (where it is not functional either); the shim's connection comes from Connect-Arcext or ARCEXT_* variables. Aliases: AzureRMContext, AzureCredential.
    .PARAMETER Break
        Accepted and ignored (Az waits for a .NET debugger).
    .PARAMETER HttpPipelineAppend
        Accepted and ignored (Az's SendAsync pipeline steps have no equivalent here).
    .PARAMETER HttpPipelinePrepend
        Accepted and ignored (Az's SendAsync pipeline steps have no equivalent here).
    .PARAMETER Proxy
        The URI of a proxy server for the requests to the arcext endpoint.
    .PARAMETER ProxyCredential
        Credentials for the -Proxy server.
    .PARAMETER ProxyUseDefaultCredentials
        Use the current user's credentials for the -Proxy server.
    .EXAMPLE
        PS C:\> $target = @{ 'Microsoft.Compute.CustomScriptExtension' = @{ targetVersion = '1.10.12' } }
        PS C:\> Update-AzConnectedExtension -ResourceGroupName contoso-rg -MachineName web01 -ExtensionTarget $target

        Upgrades the custom script extension of one machine to 1.10.12 now (the Az.ConnectedMachine help example).
    .EXAMPLE
        PS C:\> Get-AzConnectedMachine -ResourceGroupName contoso-rg | Update-AzConnectedExtension -ExtensionTarget @{ 'Microsoft.Azure.Monitor.AzureMonitorWindowsAgent' = '1.23' } -PassThru

        Upgrades the Azure Monitor agent on every machine of a resource group.
    .INPUTS
        AzConnectedMachineShim.Machine
    .OUTPUTS
        System.Boolean, with -PassThru.
    .LINK
        Get-ArcextExtensionUpgradeHistory
    .LINK
        Get-AzConnectedExtensionMetadata
    #>
    [CmdletBinding(DefaultParameterSetName = 'UpgradeExpanded', PositionalBinding = $false, SupportsShouldProcess, ConfirmImpact = 'Medium')]
    [OutputType([bool])]
    param(
        [Parameter(Mandatory, ParameterSetName = 'UpgradeExpanded')]
        [Parameter(Mandatory, ParameterSetName = 'UpgradeViaJsonFilePath')]
        [Parameter(Mandatory, ParameterSetName = 'UpgradeViaJsonString')]
        [string] $MachineName,

        [Parameter(Mandatory, ParameterSetName = 'UpgradeExpanded')]
        [Parameter(Mandatory, ParameterSetName = 'UpgradeViaJsonFilePath')]
        [Parameter(Mandatory, ParameterSetName = 'UpgradeViaJsonString')]
        [string] $ResourceGroupName,

        [Parameter(ParameterSetName = 'UpgradeExpanded')]
        [Parameter(ParameterSetName = 'UpgradeViaJsonFilePath')]
        [Parameter(ParameterSetName = 'UpgradeViaJsonString')]
        [string] $SubscriptionId,

        [Parameter(Mandatory, ParameterSetName = 'UpgradeViaIdentity', ValueFromPipeline)]
        [Parameter(Mandatory, ParameterSetName = 'UpgradeViaIdentityExpanded', ValueFromPipeline)]
        [object] $InputObject,

        [Parameter(ParameterSetName = 'UpgradeExpanded')]
        [Parameter(ParameterSetName = 'UpgradeViaIdentityExpanded')]
        [hashtable] $ExtensionTarget,

        [Parameter(Mandatory, ParameterSetName = 'UpgradeViaIdentity', ValueFromPipeline)]
        [object] $ExtensionUpgradeParameter,

        [Parameter(Mandatory, ParameterSetName = 'UpgradeViaJsonFilePath')]
        [string] $JsonFilePath,

        [Parameter(Mandatory, ParameterSetName = 'UpgradeViaJsonString')]
        [string] $JsonString,

        [Parameter()]
        [Alias('AzureRMContext', 'AzureCredential')]
        [psobject] $DefaultProfile,

        [Parameter()]
        [switch] $AsJob,

        [Parameter(DontShow)]
        [switch] $Break,

        [Parameter(DontShow)]
        [object[]] $HttpPipelineAppend,

        [Parameter(DontShow)]
        [object[]] $HttpPipelinePrepend,

        [Parameter()]
        [switch] $NoWait,

        [Parameter()]
        [switch] $PassThru,

        [Parameter(DontShow)]
        [uri] $Proxy,

        [Parameter(DontShow)]
        [pscredential] $ProxyCredential,

        [Parameter(DontShow)]
        [switch] $ProxyUseDefaultCredentials
    )

    process {
        try {
            $proxy = Get-ArcProxySetting -BoundParameters $PSBoundParameters
            $ids = if ($PSCmdlet.ParameterSetName -in @('UpgradeViaIdentity', 'UpgradeViaIdentityExpanded')) {
                Resolve-ArcInputObject -InputObject $InputObject -Kind Machine
            }
            else {
                @{ SubscriptionId = (Resolve-ArcSubscriptionId -SubscriptionId $SubscriptionId | Select-Object -First 1); ResourceGroupName = $ResourceGroupName; MachineName = $MachineName }
            }
            $path = Resolve-ArcPath -Route UpgradeExtensions -Values @{
                subscriptionId = $ids.SubscriptionId; resourceGroupName = $ids.ResourceGroupName; machineName = $ids.MachineName
            }
            if ($PSCmdlet.ParameterSetName -eq 'UpgradeViaIdentity') {
                # -ExtensionUpgradeParameter: an object or hashtable with ExtensionTarget (Az's IMachineExtensionUpgrade)
                $upgrade = $ExtensionUpgradeParameter
                $ExtensionTarget = $null
                foreach ($name in @('ExtensionTarget', 'extensionTargets', 'ExtensionTargets')) {
                    $value = if ($upgrade -is [System.Collections.IDictionary]) { $upgrade[$name] } elseif ($upgrade.PSObject.Properties[$name]) { $upgrade.$name } else { $null }
                    if ($null -ne $value) {
                        $ExtensionTarget = if ($value -is [System.Collections.IDictionary]) { $value } else { $t = @{}; foreach ($p in $value.PSObject.Properties) { $t[$p.Name] = $p.Value }; $t }
                        break
                    }
                }
            }
            $body = switch ($PSCmdlet.ParameterSetName) {
                'UpgradeViaJsonString' { Read-ArcJsonBody -JsonString $JsonString }
                'UpgradeViaJsonFilePath' { Read-ArcJsonBody -JsonFilePath $JsonFilePath }
                default {
                    $targets = [ordered]@{}
                    if ($ExtensionTarget) {
                        foreach ($key in $ExtensionTarget.Keys) {
                            $value = $ExtensionTarget[$key]
                            $targets[[string]$key] = if ($value -is [System.Collections.IDictionary]) {
                                $value
                            }
                            elseif ($value -isnot [string] -and $value.PSObject.Properties['TargetVersion']) {
                                @{ targetVersion = [string]$value.TargetVersion }
                            }
                            else {
                                @{ targetVersion = [string]$value }
                            }
                        }
                    }
                    @{ extensionTargets = $targets }
                }
            }

            $what = if ($ExtensionTarget) { ($ExtensionTarget.Keys | Sort-Object) -join ', ' } else { 'extensions' }
            if (-not $PSCmdlet.ShouldProcess("$($ids.MachineName): $what", 'Upgrade machine extensions')) {
                return
            }
            if ($AsJob) {
                Start-ArcJob -CommandName $MyInvocation.MyCommand.Name -BoundParameters $PSBoundParameters
                return
            }
            $null = Invoke-ArcRequest -ProxySetting $proxy -Method POST -Path $path -Body $body -LongRunning -NoWait:$NoWait
            if ($PassThru) {
                $true
            }
        }
        catch {
            $PSCmdlet.WriteError($_)
        }
    }
}
