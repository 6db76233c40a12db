function Resolve-ArcSubscriptionId {
    <#
    .SYNOPSIS
        Returns the subscription ids a cmdlet works on: the ones passed, or the default one.
    .DESCRIPTION
        Az cmdlets default to (Get-AzContext).Subscription.Id. The shim's default, first found wins:
        1. Connect-Arcext -SubscriptionId (set for this module on purpose);
        2. the Az context's subscription, when a Get-AzContext command exists and has one (Az.Accounts after
           Set-AzContext, or the optional Az.ConnectedMachine compatibility module's Set-AzContext);
        3. ARCEXT_SUBSCRIPTION_ID.
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
    $stored = $script:ArcShimContext
    if ($stored -and -not [string]::IsNullOrWhiteSpace([string]$stored.SubscriptionId)) {
        return [string]$stored.SubscriptionId
    }
    $fromAz = Get-ArcAzContextSubscription
    if ($fromAz) {
        return $fromAz
    }
    $default = (Get-ArcContext -AllowIncomplete).SubscriptionId
    if ([string]::IsNullOrWhiteSpace($default)) {
        $PSCmdlet.ThrowTerminatingError((New-ArcErrorRecord `
                    -Message 'No subscription given. Pass -SubscriptionId, run Set-AzContext -Subscription <id>, or set a default with Connect-Arcext -SubscriptionId or ARCEXT_SUBSCRIPTION_ID.' `
                    -ErrorId 'ArcShimNoSubscription' -Category InvalidArgument -TargetObject 'SubscriptionId'))
    }
    $default
}
