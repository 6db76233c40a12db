function Resolve-ArcSubscriptionId {
    <#
    .SYNOPSIS
        Returns the subscription ids a cmdlet works on: the ones passed, or the default one.
    .DESCRIPTION
        The default comes from Connect-AzConnectedMachineShim -SubscriptionId or ARCEXT_SUBSCRIPTION_ID,
        like Az cmdlets default to the subscription of the current context.
    .EXAMPLE
        foreach ($sub in (Resolve-ArcSubscriptionId -SubscriptionId $SubscriptionId)) { ... }
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param(
        [AllowNull()]
        [AllowEmptyCollection()]
        [string[]] $SubscriptionId
    )

    $explicit = @($SubscriptionId | Where-Object { -not [string]::IsNullOrWhiteSpace($_) })
    if ($explicit.Count -gt 0) {
        return $explicit
    }
    $default = (Get-ArcContext -AllowIncomplete).SubscriptionId
    if ([string]::IsNullOrWhiteSpace($default)) {
        $PSCmdlet.ThrowTerminatingError((New-ArcErrorRecord `
                    -Message 'No subscription given. Pass -SubscriptionId, or set a default with Connect-AzConnectedMachineShim -SubscriptionId or ARCEXT_SUBSCRIPTION_ID.' `
                    -ErrorId 'ArcShimNoSubscription' -Category InvalidArgument -TargetObject 'SubscriptionId'))
    }
    $default
}
