function Get-ArcProxySetting {
    <#
    .SYNOPSIS
        Picks Az's hidden -Proxy, -ProxyCredential and -ProxyUseDefaultCredentials out of a cmdlet's bound parameters.
    .DESCRIPTION
        Returns a hashtable for Invoke-ArcRequest -ProxySetting (empty when none was given), so every request
        of the cmdlet goes through the proxy the script named, as Az's do.
    .EXAMPLE
        $proxy = Get-ArcProxySetting -BoundParameters $PSBoundParameters
    #>
    [CmdletBinding()]
    [OutputType([hashtable])]
    param(
        [Parameter(Mandatory)]
        [System.Collections.IDictionary] $BoundParameters
    )

    $setting = @{}
    foreach ($name in @('Proxy', 'ProxyCredential', 'ProxyUseDefaultCredentials')) {
        if ($BoundParameters.Contains($name) -and $null -ne $BoundParameters[$name]) {
            $setting[$name] = $BoundParameters[$name]
        }
    }
    if ($setting.Contains('ProxyUseDefaultCredentials')) {
        $setting['ProxyUseDefaultCredentials'] = [bool]$setting['ProxyUseDefaultCredentials']
    }
    $setting
}
