function Get-ArcPagedResult {
    <#
    .SYNOPSIS
        GETs an ARM list and writes every item of every page, following nextLink.
    .DESCRIPTION
        The first page is -Path with -Query; each following page is the nextLink as given (it carries its own
        query, including api-version). A missing or empty nextLink ends the list.
    .EXAMPLE
        Get-ArcPagedResult -Path (Resolve-ArcPath -Route MachineExtensions -Values $ids)
    #>
    [CmdletBinding()]
    [OutputType([System.Collections.IDictionary])]
    param(
        [Parameter(Mandatory)]
        [string] $Path,

        [System.Collections.IDictionary] $Query,

        [string] $ApiVersion,

        [hashtable] $ProxySetting
    )

    $request = @{ Method = 'GET'; Path = $Path; ProxySetting = $ProxySetting }
    if ($Query) { $request.Query = $Query }
    if ($ApiVersion) { $request.ApiVersion = $ApiVersion }

    while ($true) {
        $response = Invoke-ArcRequest @request
        foreach ($item in @(Get-ArcValue -InputObject $response.Body -Path 'value')) {
            if ($null -ne $item) {
                $item
            }
        }
        $next = Get-ArcValue -InputObject $response.Body -Path 'nextLink'
        if ([string]::IsNullOrEmpty($next)) {
            break
        }
        $request = @{ Method = 'GET'; Path = [string]$next; ProxySetting = $ProxySetting }
        if ($ApiVersion) { $request.ApiVersion = $ApiVersion }
    }
}
