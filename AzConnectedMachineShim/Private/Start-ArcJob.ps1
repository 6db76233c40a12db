function Start-ArcJob {
    <#
    .SYNOPSIS
        Runs a public cmdlet of this module as a thread job (the -AsJob switch) and returns the job.
    .DESCRIPTION
        The job imports this module by path, receives the caller's connection (endpoint, token, default
        subscription) and runs the same cmdlet with the same parameters minus -AsJob. ShouldProcess has
        already been answered by the caller, so the job runs with -Confirm:$false.
    .EXAMPLE
        Start-ArcJob -CommandName $MyInvocation.MyCommand.Name -BoundParameters $PSBoundParameters
    #>
    [CmdletBinding()]
    [OutputType([System.Management.Automation.Job])]
    param(
        [Parameter(Mandatory)]
        [string] $CommandName,

        [Parameter(Mandatory)]
        [System.Collections.IDictionary] $BoundParameters
    )

    $parameters = @{}
    foreach ($key in $BoundParameters.Keys) {
        if ($key -notin @('AsJob', 'WhatIf', 'Confirm')) {
            $parameters[$key] = $BoundParameters[$key]
        }
    }
    if ((Get-Command -Name $CommandName -Module $MyInvocation.MyCommand.ModuleName).Parameters.ContainsKey('Confirm')) {
        $parameters['Confirm'] = $false
    }
    $manifest = Join-Path $script:ModuleRoot 'AzConnectedMachineShim.psd1'
    $context = $script:ArcShimContext

    Start-ThreadJob -Name $CommandName -ArgumentList $manifest, $context, $CommandName, $parameters -ScriptBlock {
        param($Manifest, $Context, $CommandName, $Parameters)
        $module = Import-Module -Name $Manifest -PassThru -ErrorAction Stop
        if ($null -ne $Context) {
            & $module { param($c) $script:ArcShimContext = $c } $Context
        }
        & $CommandName @Parameters
    }
}
