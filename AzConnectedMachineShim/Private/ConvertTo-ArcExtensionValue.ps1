function ConvertTo-ArcExtensionValue {
    <#
    .SYNOPSIS
        Turns an ExtensionValue (extension metadata: one published version) into the module's output object.
    .DESCRIPTION
        Property names follow Az.ConnectedMachine's IExtensionValue: Id, Name, Type, Version, ExtensionType,
        Publisher. Both the flat (2024-07-10) and the properties-nested shapes are read.
    .EXAMPLE
        $response.Body | ConvertTo-ArcExtensionValue
    #>
    [CmdletBinding()]
    [OutputType('AzConnectedMachineShim.ExtensionValue')]
    param(
        [Parameter(Mandatory, ValueFromPipeline)]
        [System.Collections.IDictionary] $Resource
    )

    process {
        $version = Get-ArcValue -InputObject $Resource -Path 'properties.version'
        $name = $Resource['name']
        [pscustomobject]@{
            PSTypeName    = 'AzConnectedMachineShim.ExtensionValue'
            Name          = if ($name) { $name } else { $version }
            Id            = $Resource['id']
            Type          = $Resource['type']
            Version       = $version
            ExtensionType = Get-ArcValue -InputObject $Resource -Path 'properties.extensionType'
            Publisher     = Get-ArcValue -InputObject $Resource -Path 'properties.publisher'
        }
    }
}
