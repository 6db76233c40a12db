function Resolve-ArcInputObject {
    <#
    .SYNOPSIS
        Gets the subscription, resource group, machine and extension names from a piped object's Id.
    .DESCRIPTION
        Az.ConnectedMachine builds the identity of -InputObject / -MachineInputObject from the object's Id;
        so does this. -Kind Extension requires an extension id, -Kind Machine accepts a machine id (or an
        extension id, whose machine is used). A string is taken as the id itself.
    .EXAMPLE
        $ids = Resolve-ArcInputObject -InputObject $InputObject -Kind Extension
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

    $id = if ($InputObject -is [string]) {
        $InputObject
    }
    elseif ($InputObject.PSObject.Properties['Id']) {
        [string]$InputObject.Id
    }
    else {
        $null
    }
    $ids = Resolve-ArcResourceId -Id $id
    if (-not $ids -or ($Kind -eq 'Extension' -and -not $ids.ExtensionName)) {
        $PSCmdlet.ThrowTerminatingError((New-ArcErrorRecord `
                    -Message "The input object's Id '$id' is not a HybridCompute $($Kind.ToLowerInvariant()) id." `
                    -ErrorId 'InvalidInputObjectId' -Category InvalidArgument -TargetObject $InputObject))
    }
    $ids
}
