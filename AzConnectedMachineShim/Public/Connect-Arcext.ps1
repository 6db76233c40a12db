function Connect-Arcext {
    <#
    .SYNOPSIS
        Points the AzConnectedMachineShim cmdlets at an arcext endpoint, with a token and a default subscription.
    .DESCRIPTION
        Stores the connection for this session; every cmdlet of the module then sends its requests to
        -Endpoint with "Authorization: Bearer <token>". Values not given here fall back to the environment
        variables ARCEXT_ENDPOINT, ARCEXT_TOKEN, ARCEXT_SUBSCRIPTION_ID and ARCEXT_SKIP_CERTIFICATE_CHECK,
        which are enough on their own: Connect is optional when they are set.

        This cmdlet replaces Connect-AzAccount for the shim. It is not Az.ConnectedMachine's
        Connect-AzConnectedMachine, which onboards a machine to Azure Arc.

        No request is made: a wrong endpoint or token shows on the first cmdlet that calls the server.
    .PARAMETER Endpoint
        Base URL of the arcext server, for example http://127.0.0.1:5000. ARM paths are appended to it.
    .PARAMETER Token
        The bearer token, as a SecureString (arcext token create prints one). Without it, ARCEXT_TOKEN is used.
    .PARAMETER SubscriptionId
        Default subscription for cmdlets run without -SubscriptionId. Without it, ARCEXT_SUBSCRIPTION_ID is used.
    .PARAMETER SkipCertificateCheck
        Accept any TLS certificate (for an arcext server started with --tls-self-signed).
    .PARAMETER PassThru
        Write the resulting connection (without the token) to the pipeline.
    .EXAMPLE
        PS C:\> $token = Read-Host -Prompt 'arcext token' -AsSecureString
        PS C:\> Connect-Arcext -Endpoint http://127.0.0.1:5000 -Token $token -SubscriptionId 00000000-0000-0000-0000-000000000001

        Connects the session to a local arcext server; later cmdlets use that subscription by default.
    .EXAMPLE
        PS C:\> $env:ARCEXT_TOKEN = (arcext token create --data-dir ./.arcext --role Owner --scope /subscriptions/$sub | Select-Object -Last 1)
        PS C:\> Connect-Arcext -Endpoint https://arcext.example.test:8443 -SubscriptionId $sub -SkipCertificateCheck -PassThru

        Uses the token from ARCEXT_TOKEN, trusts the server's self-signed certificate and shows the connection.
    .INPUTS
        None.
    .OUTPUTS
        AzConnectedMachineShim.Context, with -PassThru.
    .LINK
        Disconnect-Arcext
    #>
    [CmdletBinding(PositionalBinding = $false)]
    [OutputType('AzConnectedMachineShim.Context')]
    param(
        [Parameter(Mandatory)]
        [ValidateNotNullOrEmpty()]
        [ValidateScript({ $_.IsAbsoluteUri -and $_.Scheme -in @('http', 'https') }, ErrorMessage = 'The endpoint must be an absolute http:// or https:// URL.')]
        [Alias('BackendUri', 'Uri')]
        [uri] $Endpoint,

        [Parameter()]
        [Alias('AccessToken')]
        [securestring] $Token,

        [Parameter()]
        [Alias('Subscription')]
        [string] $SubscriptionId,

        [Parameter()]
        [switch] $SkipCertificateCheck,

        [Parameter()]
        [switch] $PassThru
    )

    if (-not $Token -and -not [string]::IsNullOrEmpty($env:ARCEXT_TOKEN)) {
        $Token = ConvertTo-SecureString -String $env:ARCEXT_TOKEN -AsPlainText -Force
    }
    if (-not $Token) {
        $PSCmdlet.ThrowTerminatingError((New-ArcErrorRecord `
                    -Message 'No token: pass -Token or set ARCEXT_TOKEN (create one with: arcext token create --role Owner --scope /subscriptions/<id>).' `
                    -ErrorId 'ArcShimNoToken' -Category AuthenticationError -TargetObject $Endpoint))
    }
    if (-not $SubscriptionId) {
        $SubscriptionId = $env:ARCEXT_SUBSCRIPTION_ID
    }

    $script:ArcShimContext = [pscustomobject]@{
        Endpoint             = $Endpoint.AbsoluteUri.TrimEnd('/')
        Token                = $Token
        SubscriptionId       = if ($SubscriptionId) { $SubscriptionId } else { $null }
        SkipCertificateCheck = $SkipCertificateCheck.IsPresent
    }
    Write-Verbose "AzConnectedMachineShim now uses $($script:ArcShimContext.Endpoint)."

    if ($PassThru) {
        [pscustomobject]@{
            PSTypeName           = 'AzConnectedMachineShim.Context'
            Endpoint             = $script:ArcShimContext.Endpoint
            SubscriptionId       = $script:ArcShimContext.SubscriptionId
            SkipCertificateCheck = $script:ArcShimContext.SkipCertificateCheck
            Source               = 'Connect-Arcext'
        }
    }
}
