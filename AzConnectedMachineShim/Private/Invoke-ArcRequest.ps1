function Invoke-ArcRequest {
    <#
    .SYNOPSIS
        Sends one ARM request to the arcext backend; the only function of the module that does HTTP.
    .DESCRIPTION
        Builds the URL from the configured endpoint and -Path (a path from Resolve-ArcPath, or an absolute
        nextLink / Azure-AsyncOperation / Location link), adds api-version and the bearer token, sends the
        body as JSON (depth 100), and returns [pscustomobject]@{ StatusCode; Headers; Body; Uri } with the
        JSON body parsed into hashtables.

        An error status becomes a terminating ErrorRecord (New-ArcErrorRecord; the category follows
        Get-ArcErrorCategory: 404 ObjectNotFound, 400 InvalidArgument, 401/403 PermissionDenied,
        409 ResourceExists, 5xx ConnectionError) with the ARM error code as ErrorId.

        With -LongRunning it follows Az's client-side LRO loop: on 201/202 it waits Retry-After seconds
        (30 when absent), polls Azure-AsyncOperation, else Location, else the request URI, until the status
        (or properties.provisioningState) is Succeeded, Failed or Canceled; then it GETs the original URI for
        PUT/PATCH, or the Location link for POST, and returns that response (DELETE returns the last poll,
        as the Python SDK does: the resource is gone). Failed and Canceled
        operations are errors. -NoWait returns the first response without polling.

        Links that point to another host are rebased onto the configured endpoint, so the token is only
        ever sent to that endpoint. -ProxySetting (Az's -Proxy, -ProxyCredential, -ProxyUseDefaultCredentials)
        is passed to every exchange, polls included.
    .EXAMPLE
        Invoke-ArcRequest -Method GET -Path (Resolve-ArcPath -Route Machine -Values $ids)
    .EXAMPLE
        Invoke-ArcRequest -Method PATCH -Path $path -Body @{ properties = @{ enableAutomaticUpgrade = $false } } -LongRunning
    #>
    [CmdletBinding()]
    [OutputType([pscustomobject])]
    param(
        [Parameter(Mandatory)]
        [ValidateSet('GET', 'PUT', 'PATCH', 'POST', 'DELETE')]
        [string] $Method,

        [Parameter(Mandatory)]
        [ValidateNotNullOrEmpty()]
        [string] $Path,

        [System.Collections.IDictionary] $Query,

        # A hashtable/object serialised to JSON, or a string sent as it is (already JSON).
        [AllowNull()]
        [object] $Body,

        [ValidateNotNullOrEmpty()]
        [string] $ApiVersion = $script:ArcDefaultApiVersion,

        [switch] $LongRunning,

        [switch] $NoWait,

        # -Proxy, -ProxyCredential, -ProxyUseDefaultCredentials for Invoke-WebRequest (Get-ArcProxySetting).
        [hashtable] $ProxySetting
    )

    $context = Get-ArcContext
    $endpointAuthority = ([uri]$context.Endpoint).GetLeftPart([System.UriPartial]::Authority)
    $userAgent = "AzConnectedMachineShim/$($MyInvocation.MyCommand.Module.Version) PowerShell/$($PSVersionTable.PSVersion)"

    # An absolute link keeps its path and query; a link to another host is rebased onto the endpoint.
    $resolveUri = {
        param([string] $Link)
        if ($Link -match '^[a-zA-Z][a-zA-Z0-9+.-]*://') {
            $absolute = [uri]$Link
            if ($absolute.GetLeftPart([System.UriPartial]::Authority) -ne $endpointAuthority) {
                Write-Verbose "Rebasing link '$Link' onto the endpoint '$endpointAuthority'."
                return $endpointAuthority + $absolute.PathAndQuery
            }
            return $Link
        }
        $context.Endpoint + '/' + $Link.TrimStart('/')
    }

    $requestUri = & $resolveUri $Path
    $pairs = [System.Collections.Generic.List[string]]::new()
    if ($requestUri -notmatch '[?&]api-version=') {
        $pairs.Add('api-version=' + [uri]::EscapeDataString($ApiVersion))
    }
    if ($Query) {
        foreach ($key in $Query.Keys) {
            $value = $Query[$key]
            if ($null -ne $value -and "$value" -ne '') {
                $pairs.Add([string]$key + '=' + [uri]::EscapeDataString([string]$value))
            }
        }
    }
    if ($pairs.Count -gt 0) {
        $separator = if ($requestUri.Contains('?')) { '&' } else { '?' }
        $requestUri += $separator + ($pairs -join '&')
    }

    $json = $null
    if ($null -ne $Body) {
        $json = if ($Body -is [string]) { $Body } else { ConvertTo-Json -InputObject $Body -Depth 100 -Compress }
    }

    $headers = @{
        Authorization            = 'Bearer ' + (ConvertFrom-SecureString -SecureString $context.Token -AsPlainText)
        Accept                   = 'application/json'
        'x-ms-client-request-id' = [guid]::NewGuid().ToString()
    }

    # One HTTP exchange. Returns the normalised response; connection failures are ConnectionError.
    $send = {
        param([string] $RequestMethod, [string] $RequestUri, [AllowNull()] [string] $RequestBody)
        $request = @{
            Uri                = $RequestUri
            Method             = $RequestMethod
            Headers            = $headers
            UserAgent          = $userAgent
            SkipHttpErrorCheck = $true
            ErrorAction        = 'Stop'
            Verbose            = $false
        }
        if (-not [string]::IsNullOrEmpty($RequestBody)) {
            $request.Body = $RequestBody
            $request.ContentType = 'application/json; charset=utf-8'
        }
        if ($context.SkipCertificateCheck) {
            $request.SkipCertificateCheck = $true
        }
        if ($ProxySetting) {
            foreach ($key in $ProxySetting.Keys) {
                $request[$key] = $ProxySetting[$key]
            }
        }
        Write-Verbose "$RequestMethod $RequestUri"
        try {
            $response = Invoke-WebRequest @request
        }
        catch {
            $PSCmdlet.ThrowTerminatingError((New-ArcErrorRecord `
                        -Message "Cannot reach the arcext endpoint '$($context.Endpoint)': $($_.Exception.Message)" `
                        -ErrorId 'ArcEndpointUnreachable' -Category ConnectionError -TargetObject $RequestUri `
                        -InnerException $_.Exception))
        }

        $responseHeaders = @{}
        if ($null -ne $response.Headers) {
            foreach ($name in $response.Headers.Keys) {
                $responseHeaders[[string]$name] = @($response.Headers[$name]) -join ', '
            }
        }
        $raw = $response.Content
        if ($raw -is [byte[]]) {
            $raw = [System.Text.Encoding]::UTF8.GetString($raw)
        }
        $parsed = $null
        if (-not [string]::IsNullOrWhiteSpace($raw)) {
            try {
                $parsed = ConvertFrom-Json -InputObject $raw -AsHashtable -NoEnumerate -Depth 100 -ErrorAction Stop
            }
            catch {
                $parsed = [string]$raw
            }
        }
        Write-Verbose "$RequestMethod $RequestUri -> $([int]$response.StatusCode)"
        [pscustomobject]@{
            StatusCode = [int]$response.StatusCode
            Headers    = $responseHeaders
            Body       = $parsed
            Uri        = $RequestUri
        }
    }

    # An error status (>= 400) becomes a terminating ErrorRecord built from the ARM error body.
    $assertSuccess = {
        param([pscustomobject] $Response)
        if ($Response.StatusCode -lt 400) {
            return
        }
        $armError = if ($Response.Body -is [System.Collections.IDictionary]) { $Response.Body['error'] } else { $null }
        $code = "Http$($Response.StatusCode)"
        $message = if ($Response.Body -is [string]) { $Response.Body } else { "The arcext endpoint answered HTTP $($Response.StatusCode)." }
        $target = $Response.Uri
        if ($armError -is [System.Collections.IDictionary]) {
            if ($armError['code']) { $code = [string]$armError['code'] }
            if ($armError['message']) { $message = [string]$armError['message'] }
            if ($armError['target']) { $target = [string]$armError['target'] }
        }
        $PSCmdlet.ThrowTerminatingError((New-ArcErrorRecord -Message "$code`: $message" -ErrorId $code `
                    -Category (Get-ArcErrorCategory -StatusCode $Response.StatusCode) `
                    -TargetObject $target -StatusCode $Response.StatusCode))
    }

    $response = & $send $Method $requestUri $json
    & $assertSuccess $response

    if (-not $LongRunning -or $NoWait -or $response.StatusCode -notin @(201, 202)) {
        return $response
    }

    # Long-running operation (Az.ConnectedMachine / autorest.powershell semantics).
    $asyncOperation = $response.Headers['Azure-AsyncOperation']
    $location = $response.Headers['Location']
    $pollUri = if ($asyncOperation) { & $resolveUri $asyncOperation } elseif ($location) { & $resolveUri $location } else { $requestUri }
    $retryAfter = $script:ArcDefaultRetryAfterSeconds
    $deadline = [datetime]::UtcNow.AddSeconds($script:ArcLroTimeoutSeconds)
    $poll = $response
    $state = $null
    while ($true) {
        $seconds = 0
        $header = $poll.Headers['Retry-After']
        if ($header -and [int]::TryParse($header, [ref]$seconds)) {
            $retryAfter = [math]::Max(0, $seconds)
        }
        if ([datetime]::UtcNow.AddSeconds($retryAfter) -gt $deadline) {
            $PSCmdlet.ThrowTerminatingError((New-ArcErrorRecord `
                        -Message "The operation $Method $requestUri did not finish within $($script:ArcLroTimeoutSeconds) seconds; its status is at $pollUri." `
                        -ErrorId 'LongRunningOperationTimeout' -Category OperationTimeout -TargetObject $pollUri))
        }
        Write-Verbose "Operation in progress; next poll in $retryAfter s: $pollUri"
        Start-Sleep -Seconds $retryAfter

        $poll = & $send 'GET' $pollUri $null
        & $assertSuccess $poll
        if ($poll.StatusCode -in @(201, 202)) {
            continue
        }
        $state = Get-ArcValue -InputObject $poll.Body -Path 'status'
        if (-not $state) {
            $state = Get-ArcValue -InputObject $poll.Body -Path 'properties.provisioningState'
        }
        if (-not $state -or $state -in @('Succeeded', 'Failed', 'Canceled')) {
            break
        }
    }

    if ($state -in @('Failed', 'Canceled')) {
        $code = Get-ArcValue -InputObject $poll.Body -Path 'error.code'
        $message = Get-ArcValue -InputObject $poll.Body -Path 'error.message'
        if (-not $code) { $code = "LongRunningOperation$state" }
        if (-not $message) { $message = "The operation $Method $requestUri ended $state." }
        $category = if ($state -eq 'Canceled') { 'OperationStopped' } else { 'InvalidResult' }
        $PSCmdlet.ThrowTerminatingError((New-ArcErrorRecord -Message "$code`: $message" -ErrorId $code `
                    -Category $category -TargetObject $requestUri))
    }

    $final = if ($Method -in @('PUT', 'PATCH')) {
        & $send 'GET' $requestUri $null
    }
    elseif ($Method -eq 'POST' -and $location) {
        & $send 'GET' (& $resolveUri $location) $null
    }
    else {
        $poll
    }
    & $assertSuccess $final
    $final
}
