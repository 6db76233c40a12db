function Resolve-ArcPath {
    <#
    .SYNOPSIS
        Builds a resource path from a named route template in $script:ArcRoutes.
    .DESCRIPTION
        Replaces every {placeholder} of the template with the URL-escaped value of the same key in -Values.
        A missing or empty value is an argument error: no request is ever sent to a half-built path.
    .EXAMPLE
        Resolve-ArcPath -Route MachineExtension -Values @{ subscriptionId = $sub; resourceGroupName = 'rg'; machineName = 'm1'; extensionName = 'ama' }
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param(
        [Parameter(Mandatory)]
        [string] $Route,

        [Parameter(Mandatory)]
        [hashtable] $Values
    )

    if (-not $script:ArcRoutes.Contains($Route)) {
        $PSCmdlet.ThrowTerminatingError((New-ArcErrorRecord -Message "Unknown route '$Route'." -ErrorId 'UnknownRoute' -Category InvalidArgument -TargetObject $Route))
    }
    $template = $script:ArcRoutes[$Route]
    $path = $template
    foreach ($match in [regex]::Matches($template, '\{(\w+)\}')) {
        $name = $match.Groups[1].Value
        $value = [string]$Values[$name]
        if ([string]::IsNullOrWhiteSpace($value)) {
            $PSCmdlet.ThrowTerminatingError((New-ArcErrorRecord -Message "A value for '$name' is required to build the '$Route' path." -ErrorId 'MissingPathValue' -Category InvalidArgument -TargetObject $name))
        }
        $path = $path.Replace($match.Value, [uri]::EscapeDataString($value))
    }
    $path
}
