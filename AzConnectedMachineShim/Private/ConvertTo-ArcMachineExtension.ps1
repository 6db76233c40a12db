function ConvertTo-ArcMachineExtension {
    <#
    .SYNOPSIS
        Turns a MachineExtension ARM resource into the module's output object.
    .DESCRIPTION
        Property names follow Az.ConnectedMachine's IMachineExtension (properties.* flattened, properties.type
        as MachineExtensionType, ResourceGroupName and MachineName parsed from Id; Tags, with Tag as an alias). Protected settings are
        never part of the object, even if a server returned them.
    .EXAMPLE
        $response.Body | ConvertTo-ArcMachineExtension
    #>
    [CmdletBinding()]
    [OutputType('AzConnectedMachineShim.MachineExtension')]
    param(
        [Parameter(Mandatory, ValueFromPipeline)]
        [System.Collections.IDictionary] $Resource
    )

    process {
        $ids = Resolve-ArcResourceId -Id ([string]$Resource['id'])
        $instanceView = Get-ArcValue -InputObject $Resource -Path 'properties.instanceView'
        $object = [pscustomobject]@{
            PSTypeName                     = 'AzConnectedMachineShim.MachineExtension'
            Name                           = $Resource['name']
            Id                             = $Resource['id']
            Type                           = $Resource['type']
            Location                       = $Resource['location']
            Tags                           = $Resource['tags']
            SubscriptionId                 = if ($ids) { $ids.SubscriptionId } else { $null }
            ResourceGroupName              = if ($ids) { $ids.ResourceGroupName } else { $null }
            MachineName                    = if ($ids) { $ids.MachineName } else { $null }
            Publisher                      = Get-ArcValue -InputObject $Resource -Path 'properties.publisher'
            MachineExtensionType           = Get-ArcValue -InputObject $Resource -Path 'properties.type'
            TypeHandlerVersion             = Get-ArcValue -InputObject $Resource -Path 'properties.typeHandlerVersion'
            EnableAutomaticUpgrade         = Get-ArcValue -InputObject $Resource -Path 'properties.enableAutomaticUpgrade'
            AutoUpgradeMinorVersion        = Get-ArcValue -InputObject $Resource -Path 'properties.autoUpgradeMinorVersion'
            ForceUpdateTag                 = Get-ArcValue -InputObject $Resource -Path 'properties.forceUpdateTag'
            Setting                        = Get-ArcValue -InputObject $Resource -Path 'properties.settings'
            ProvisioningState              = Get-ArcValue -InputObject $Resource -Path 'properties.provisioningState'
            InstanceView                   = $instanceView
            InstanceViewName               = Get-ArcValue -InputObject $instanceView -Path 'name'
            InstanceViewType               = Get-ArcValue -InputObject $instanceView -Path 'type'
            InstanceViewTypeHandlerVersion = Get-ArcValue -InputObject $instanceView -Path 'typeHandlerVersion'
            StatusCode                     = Get-ArcValue -InputObject $instanceView -Path 'status.code'
            StatusDisplayStatus            = Get-ArcValue -InputObject $instanceView -Path 'status.displayStatus'
            StatusLevel                    = Get-ArcValue -InputObject $instanceView -Path 'status.level'
            StatusMessage                  = Get-ArcValue -InputObject $instanceView -Path 'status.message'
            StatusTime                     = Get-ArcValue -InputObject $instanceView -Path 'status.time'
            SystemDataCreatedAt            = Get-ArcValue -InputObject $Resource -Path 'systemData.createdAt'
            SystemDataCreatedBy            = Get-ArcValue -InputObject $Resource -Path 'systemData.createdBy'
            SystemDataCreatedByType        = Get-ArcValue -InputObject $Resource -Path 'systemData.createdByType'
            SystemDataLastModifiedAt       = Get-ArcValue -InputObject $Resource -Path 'systemData.lastModifiedAt'
            SystemDataLastModifiedBy       = Get-ArcValue -InputObject $Resource -Path 'systemData.lastModifiedBy'
            SystemDataLastModifiedByType   = Get-ArcValue -InputObject $Resource -Path 'systemData.lastModifiedByType'
        }
        # Az's current objects name it Tags; Tag (this module's earlier name) stays as an alias
        Add-Member -InputObject $object -MemberType AliasProperty -Name Tag -Value Tags -PassThru
    }
}
