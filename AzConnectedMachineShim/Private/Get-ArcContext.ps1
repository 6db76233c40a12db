function Get-ArcContext {
    <#
    .SYNOPSIS
        Returns the connection every request uses: endpoint, bearer token, default subscription, TLS check.
    .DESCRIPTION
        Each value comes from Connect-Arcext when it set one, otherwise from the environment:
        ARCEXT_ENDPOINT, ARCEXT_TOKEN, ARCEXT_SUBSCRIPTION_ID and ARCEXT_SKIP_CERTIFICATE_CHECK (1/true/yes).
        Without an endpoint or a token this is a terminating error that says how to connect.
    .EXAMPLE
        $context = Get-ArcContext
    #>
    [CmdletBinding()]
    [OutputType([pscustomobject])]
    param(
        # Return what is known without failing on a missing endpoint or token.
        [switch] $AllowIncomplete
    )

    $stored = $script:ArcShimContext

    $endpoint = if ($stored -and $stored.Endpoint) { [string]$stored.Endpoint } else { $env:ARCEXT_ENDPOINT }
    $token = if ($stored -and $stored.Token) {
        $stored.Token
    }
    elseif (-not [string]::IsNullOrEmpty($env:ARCEXT_TOKEN)) {
        ConvertTo-SecureString -String $env:ARCEXT_TOKEN -AsPlainText -Force
    }
    $subscriptionId = if ($stored -and $stored.SubscriptionId) { [string]$stored.SubscriptionId } else { $env:ARCEXT_SUBSCRIPTION_ID }
    $skipCertificateCheck = if ($stored) {
        [bool]$stored.SkipCertificateCheck
    }
    else {
        "$env:ARCEXT_SKIP_CERTIFICATE_CHECK" -in @('1', 'true', 'yes')
    }

    $context = [pscustomobject]@{
        Endpoint             = if ($endpoint) { $endpoint.TrimEnd('/') } else { $null }
        Token                = $token
        SubscriptionId       = if ($subscriptionId) { $subscriptionId } else { $null }
        SkipCertificateCheck = $skipCertificateCheck
        Source               = if ($stored) { 'Connect-Arcext' } else { 'Environment' }
    }
    if ($AllowIncomplete) {
        return $context
    }

    $parsed = $null
    if (-not $context.Endpoint -or -not [uri]::TryCreate($context.Endpoint, [System.UriKind]::Absolute, [ref]$parsed) -or $parsed.Scheme -notin @('http', 'https')) {
        $PSCmdlet.ThrowTerminatingError((New-ArcErrorRecord `
                    -Message "No arcext endpoint is configured (got '$($context.Endpoint)'). Run Connect-Arcext -Endpoint <url> -Token <token>, or set ARCEXT_ENDPOINT and ARCEXT_TOKEN." `
                    -ErrorId 'ArcShimNotConnected' -Category InvalidOperation -TargetObject $context.Endpoint `
                    -RecommendedAction 'Connect-Arcext -Endpoint http://127.0.0.1:5000 -Token (Read-Host -AsSecureString)'))
    }
    if (-not $context.Token) {
        $PSCmdlet.ThrowTerminatingError((New-ArcErrorRecord `
                    -Message 'No arcext token is configured. Pass -Token to Connect-Arcext or set ARCEXT_TOKEN (create one with: arcext token create --role Owner --scope /subscriptions/<id>).' `
                    -ErrorId 'ArcShimNoToken' -Category AuthenticationError -TargetObject $context.Endpoint))
    }
    $context
}
