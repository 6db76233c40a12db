function Resolve-ArcInputObject {
    <#
    .SYNOPSIS
        Gets the subscription, resource group, machine and extension names from an -InputObject / -MachineInputObject.
    .DESCRIPTION
        Accepts what Az's identity parameters (IConnectedMachineIdentity) accept:
        - a resource id as a string;
        - any object with an Id property (the shim's own output, an Az object, a deserialised one);
        - a hashtable (or object) with Id, or with SubscriptionId, ResourceGroupName, MachineName
          (Name, as IConnectedMachineIdentity calls the machine) and, for an extension, ExtensionName.
        A missing SubscriptionId is the default subscription. -Kind Extension requires an extension;
        -Kind Machine accepts a machine (or an extension, whose machine is used).
    .EXAMPLE
        $ids = Resolve-ArcInputObject -InputObject $InputObject -Kind Extension
    .EXAMPLE
        Resolve-ArcInputObject -InputObject @{ ResourceGroupName = 'rg1'; MachineName = 'm1'; ExtensionName = 'ama' } -Kind Extension
    #>
    [CmdletBinding()]
    [OutputType([hashtable])]
    param(
        [Parameter(Mandatory)]
        [object] $InputObject,

        [Parameter(Mandatory)]
        [ValidateSet('Machine', 'Extension')]
        [string] $Kind
    )

    # One named value of a hashtable (any key case) or of an object's properties; $null when absent.
    $read = {
        param([object] $Source, [string] $Name)
        if ($Source -is [System.Collections.IDictionary]) {
            foreach ($key in $Source.Keys) {
                if ([string]$key -eq $Name) { return $Source[$key] }
            }
            return $null
        }
        $property = $Source.PSObject.Properties[$Name]
        if ($property) { return $property.Value }
        $null
    }

    $ids = $null
    $id = $null
    if ($InputObject -is [string]) {
        $id = $InputObject
    }
    else {
        $id = & $read $InputObject 'Id'
    }
    if (-not [string]::IsNullOrWhiteSpace([string]$id)) {
        $ids = Resolve-ArcResourceId -Id ([string]$id)
    }
    elseif ($InputObject -isnot [string]) {
        $machine = & $read $InputObject 'MachineName'
        if (-not $machine) {
            $machine = & $read $InputObject 'Name'
        }
        $group = & $read $InputObject 'ResourceGroupName'
        if ($group -and $machine) {
            $subscription = & $read $InputObject 'SubscriptionId'
            if (-not $subscription) {
                $subscription = Resolve-ArcSubscriptionId | Select-Object -First 1
            }
            $ids = @{
                SubscriptionId    = [string]$subscription
                ResourceGroupName = [string]$group
                MachineName       = [string]$machine
                ExtensionName     = [string](& $read $InputObject 'ExtensionName')
            }
            if (-not $ids.ExtensionName) { $ids.ExtensionName = $null }
        }
    }

    if (-not $ids -or ($Kind -eq 'Extension' -and -not $ids.ExtensionName)) {
        $what = if ($id) { "Id '$id'" } else { 'SubscriptionId/ResourceGroupName/MachineName' + $(if ($Kind -eq 'Extension') { '/ExtensionName' } else { '' }) }
        $PSCmdlet.ThrowTerminatingError((New-ArcErrorRecord `
                    -Message "The input object's $what does not name a HybridCompute $($Kind.ToLowerInvariant()). Pass an object with Id, a hashtable with Id or with SubscriptionId, ResourceGroupName, MachineName$(if ($Kind -eq 'Extension') { ', ExtensionName' }), or the id as a string." `
                    -ErrorId 'InvalidInputObjectId' -Category InvalidArgument -TargetObject $InputObject))
    }
    $ids
}
