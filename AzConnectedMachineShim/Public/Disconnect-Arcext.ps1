function Disconnect-Arcext {
    <#
    .SYNOPSIS
        Forgets the connection set by Connect-Arcext.
    .DESCRIPTION
        After this the cmdlets use the ARCEXT_ENDPOINT, ARCEXT_TOKEN and ARCEXT_SUBSCRIPTION_ID environment
        variables again, or fail with ArcShimNotConnected when those are not set.
    .EXAMPLE
        PS C:\> Disconnect-Arcext

        Drops the stored endpoint, token and default subscription of this session.
    .EXAMPLE
        PS C:\> Disconnect-Arcext; $env:ARCEXT_ENDPOINT = 'http://127.0.0.1:5001'

        Switches the session back to the environment variables, pointing at another server.
    .INPUTS
        None.
    .OUTPUTS
        None.
    .LINK
        Connect-Arcext
    #>
    [CmdletBinding(PositionalBinding = $false)]
    [OutputType([void])]
    param()

    $script:ArcShimContext = $null
    Write-Verbose 'AzConnectedMachineShim connection cleared.'
}
