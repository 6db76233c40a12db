function ConvertTo-ArcMachine {
    <#
    .SYNOPSIS
        Turns a Machine ARM resource into the module's output object.
    .DESCRIPTION
        Property names follow Az.ConnectedMachine's IMachine for the commonly used properties (Status,
        ProvisioningState, OSType, OSName, OSVersion, AgentVersion, ...); ResourceGroupName is parsed from Id.
    .EXAMPLE
        $response.Body | ConvertTo-ArcMachine
    #>
    [CmdletBinding()]
    [OutputType('AzConnectedMachineShim.Machine')]
    param(
        [Parameter(Mandatory, ValueFromPipeline)]
        [System.Collections.IDictionary] $Resource
    )

    process {
        $ids = Resolve-ArcResourceId -Id ([string]$Resource['id'])
        $object = [pscustomobject]@{
            PSTypeName          = 'AzConnectedMachineShim.Machine'
            Name                = $Resource['name']
            Id                  = $Resource['id']
            Type                = $Resource['type']
            Location            = $Resource['location']
            Kind                = $Resource['kind']
            Tags                = $Resource['tags']
            SubscriptionId      = if ($ids) { $ids.SubscriptionId } else { $null }
            ResourceGroupName   = if ($ids) { $ids.ResourceGroupName } else { $null }
            Status              = Get-ArcValue -InputObject $Resource -Path 'properties.status'
            ProvisioningState   = Get-ArcValue -InputObject $Resource -Path 'properties.provisioningState'
            LastStatusChange    = Get-ArcValue -InputObject $Resource -Path 'properties.lastStatusChange'
            AgentVersion        = Get-ArcValue -InputObject $Resource -Path 'properties.agentVersion'
            OSType              = Get-ArcValue -InputObject $Resource -Path 'properties.osType'
            OSName              = Get-ArcValue -InputObject $Resource -Path 'properties.osName'
            OSVersion           = Get-ArcValue -InputObject $Resource -Path 'properties.osVersion'
            OSSku               = Get-ArcValue -InputObject $Resource -Path 'properties.osSku'
            DisplayName         = Get-ArcValue -InputObject $Resource -Path 'properties.displayName'
            MachineFqdn         = Get-ArcValue -InputObject $Resource -Path 'properties.machineFqdn'
            DomainName          = Get-ArcValue -InputObject $Resource -Path 'properties.domainName'
            VMId                = Get-ArcValue -InputObject $Resource -Path 'properties.vmId'
            IdentityType        = Get-ArcValue -InputObject $Resource -Path 'identity.type'
            IdentityPrincipalId = Get-ArcValue -InputObject $Resource -Path 'identity.principalId'
            IdentityTenantId    = Get-ArcValue -InputObject $Resource -Path 'identity.tenantId'
        }
        # Az's current objects name it Tags; Tag (this module's earlier name) stays as an alias
        Add-Member -InputObject $object -MemberType AliasProperty -Name Tag -Value Tags -PassThru
    }
}
