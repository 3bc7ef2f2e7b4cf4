package tokencache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Fetcher performs one token request per call. Implementations must be safe
// for concurrent use, although the cache never runs two fetches at once.
type Fetcher interface {
	Fetch(ctx context.Context) (*Grant, error)
}

// Grant is a successful token response.
type Grant struct {
	AccessToken string
	// TokenType is token_type as the server sent it, in any case.
	TokenType string
	// ExpiresIn is the lifetime the server granted, or zero when the
	// response carried no usable expires_in.
	ExpiresIn time.Duration
}

// AuthMethod is the client authentication method at the token endpoint.
type AuthMethod string

// The client authentication methods. RFC 6749 section 2.3.1 defines the
// first two and RFC 7523 section 2.2 the third, as OpenID Connect Core
// section 9 names them.
const (
	ClientSecretBasic AuthMethod = "client_secret_basic"
	ClientSecretPost  AuthMethod = "client_secret_post"
	PrivateKeyJWT     AuthMethod = "private_key_jwt"
)

// Error kinds, used as the error_code label of token-fetch metrics when the
// server sent no OAuth error code.
const (
	KindTimeout     = "timeout"
	KindNetwork     = "network"
	KindHTTPStatus  = "http_status"
	KindBadResponse = "bad_response"
	KindCredentials = "credentials"
)

// FetchError describes a failed token request without revealing the client
// secret or any token.
type FetchError struct {
	// Kind is one of the Kind constants, or "oauth" when the server sent an
	// RFC 6749 section 5.2 error code.
	Kind string
	// Code and Description are the OAuth error and error_description.
	Code        string
	Description string
	// Status is the HTTP status code, or zero when no response arrived.
	Status int
	// ContentType and Excerpt describe a response that was not a token, with
	// anything that looks like a credential removed from the excerpt.
	ContentType string
	Excerpt     string
	// RetryAfter is the server's Retry-After on a 429 or 503, else zero.
	RetryAfter time.Duration
	// Err is the underlying error, with credentials removed from its text.
	Err error
}

func (e *FetchError) Error() string {
	var b strings.Builder
	b.WriteString("token request failed: ")
	switch {
	case e.Code != "":
		fmt.Fprintf(&b, "server returned error %q", e.Code)
		if e.Description != "" {
			fmt.Fprintf(&b, " (%s)", e.Description)
		}
	case e.Err != nil:
		b.WriteString(e.Err.Error())
	default:
		b.WriteString(e.Kind)
	}
	if e.Status != 0 {
		fmt.Fprintf(&b, "; HTTP status %d", e.Status)
	}
	if e.ContentType != "" {
		fmt.Fprintf(&b, "; content type %q", e.ContentType)
	}
	if e.Excerpt != "" {
		fmt.Fprintf(&b, "; body starts %q", e.Excerpt)
	}
	return b.String()
}

func (e *FetchError) Unwrap() error { return e.Err }

// FailureLabels lists every value that [FetchError.Label] returns.
var FailureLabels = []string{
	"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
	"unsupported_grant_type", "invalid_scope", "access_denied", "server_error",
	"temporarily_unavailable", "invalid_target", "other_oauth_error",
	KindTimeout, KindNetwork, KindHTTPStatus, KindBadResponse, KindCredentials,
}

// Label returns a bounded value for the error_code metric label: a standard
// OAuth error code, "other_oauth_error", or the error kind.
func (e *FetchError) Label() string {
	if e.Code == "" {
		return e.Kind
	}
	switch e.Code {
	case "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
		"unsupported_grant_type", "invalid_scope", "access_denied",
		"server_error", "temporarily_unavailable", "invalid_target":
		return e.Code
	}
	return "other_oauth_error"
}

// IsCredentialError reports whether the server rejected the client's
// credentials (invalid_client or unauthorized_client), which retrying with
// the same secret will not fix.
func (e *FetchError) IsCredentialError() bool {
	return e.Code == "invalid_client" || e.Code == "unauthorized_client" || e.Kind == KindCredentials
}

// SecretSource supplies the client secret.
type SecretSource interface {
	// Secret returns the current secret.
	Secret() (string, error)
}

// StaticSecret is a secret fixed at startup.
type StaticSecret string

// Secret returns s.
func (s StaticSecret) Secret() (string, error) { return string(s), nil }

// AssertionSigner signs a client assertion (RFC 7523 section 2.2) for the
// given audience, the token endpoint URL. Each call must return a new
// assertion with a fresh jti.
type AssertionSigner interface {
	Sign(audience string) (string, error)
}

// ClientCredentials fetches tokens with golang.org/x/oauth2/clientcredentials,
// one request per Fetch and with exactly the configured authentication
// method, never guessing between methods.
type ClientCredentials struct {
	TokenURL string
	ClientID string
	// Secret is read before every request, so a rotated secret file takes
	// effect on the next fetch. Unused with PrivateKeyJWT.
	Secret SecretSource
	// Method defaults to ClientSecretBasic, which form-encodes the id and
	// secret before Basic encoding as RFC 6749 section 2.3.1 requires.
	Method AuthMethod
	// Signer signs client assertions; required with PrivateKeyJWT.
	Signer AssertionSigner
	Scopes []string
	// Params are extra token-request parameters such as audience or the
	// RFC 8707 resource.
	Params url.Values
	// HTTPClient sends the request. If nil, http.DefaultClient is used.
	HTTPClient *http.Client

	// wrapOnce guards client.
	wrapOnce sync.Once
	client   *http.Client
}

// assertionType is the client_assertion_type of RFC 7523 section 2.2.
const assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Fetch sends one token request and returns the grant, or a *FetchError.
func (c *ClientCredentials) Fetch(ctx context.Context) (*Grant, error) {
	conf := clientcredentials.Config{
		ClientID:       c.ClientID,
		TokenURL:       c.TokenURL,
		Scopes:         c.Scopes,
		EndpointParams: url.Values{},
		AuthStyle:      oauth2.AuthStyleInHeader,
	}
	for k, v := range c.Params {
		conf.EndpointParams[k] = v
	}
	var secret string
	switch c.Method {
	case ClientSecretPost:
		conf.AuthStyle = oauth2.AuthStyleInParams
	case PrivateKeyJWT:
		conf.AuthStyle = oauth2.AuthStyleInParams
		if c.Signer == nil {
			return nil, &FetchError{Kind: KindCredentials, Err: errors.New("private_key_jwt needs a signing key")}
		}
		assertion, err := c.Signer.Sign(c.TokenURL)
		if err != nil {
			return nil, &FetchError{Kind: KindCredentials, Err: fmt.Errorf("sign client assertion: %w", err)}
		}
		conf.EndpointParams.Set("client_assertion_type", assertionType)
		conf.EndpointParams.Set("client_assertion", assertion)
	}
	if c.Method != PrivateKeyJWT {
		if c.Secret == nil {
			return nil, &FetchError{Kind: KindCredentials, Err: errors.New("no client secret configured")}
		}
		s, err := c.Secret.Secret()
		if err != nil {
			return nil, &FetchError{Kind: KindCredentials, Err: fmt.Errorf("read client secret: %w", err)}
		}
		secret = s
		conf.ClientSecret = s
	}

	info := &responseInfo{}
	ctx = context.WithValue(ctx, responseInfoKey{}, info)
	ctx = context.WithValue(ctx, oauth2.HTTPClient, c.httpClient())
	tok, err := conf.Token(ctx)
	if err != nil {
		if g := lenientGrant(err, info); g != nil {
			return g, nil
		}
		return nil, classify(err, info, secret)
	}
	return &Grant{
		AccessToken: tok.AccessToken,
		TokenType:   tok.TokenType,
		ExpiresIn:   expiresIn(tok.Extra("expires_in")),
	}, nil
}

// httpClient returns HTTPClient with a transport that records the status,
// content type and first bytes of the response, which the oauth2 package
// does not report for a 2xx body it cannot parse.
func (c *ClientCredentials) httpClient() *http.Client {
	c.wrapOnce.Do(func() {
		base := c.HTTPClient
		if base == nil {
			base = http.DefaultClient
		}
		rt := base.Transport
		if rt == nil {
			rt = http.DefaultTransport
		}
		wrapped := *base
		wrapped.Transport = recordingTransport{rt}
		c.client = &wrapped
	})
	return c.client
}

// expiresIn reads expires_in as a JSON number or a numeric string. Anything
// else, zero or a negative value means the lifetime is unknown.
func expiresIn(v any) time.Duration {
	var secs float64
	switch x := v.(type) {
	case float64:
		secs = x
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil {
			return 0
		}
		secs = f
	default:
		return 0
	}
	// The negated form also rejects NaN, which every comparison fails.
	if !(secs > 0 && secs <= 10*365*24*3600) {
		return 0
	}
	return time.Duration(secs * float64(time.Second))
}

// lenientGrant reads a 2xx JSON token response that golang.org/x/oauth2
// rejected only because its expires_in is not an integer, such as "soon"
// or 3599.5: that package (v0.38.0) fails the whole response then. It
// returns nil for any other failure.
func lenientGrant(err error, info *responseInfo) *Grant {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) || info.status < 200 || info.status > 299 || info.truncated() {
		return nil
	}
	var body struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   any    `json:"expires_in"`
		Error       string `json:"error"`
	}
	if json.Unmarshal(info.body(), &body) != nil || body.AccessToken == "" || body.Error != "" {
		return nil
	}
	return &Grant{AccessToken: body.AccessToken, TokenType: body.TokenType, ExpiresIn: expiresIn(body.ExpiresIn)}
}

// classify turns an error from the oauth2 package into a *FetchError.
func classify(err error, info *responseInfo, secret string) *FetchError {
	fe := &FetchError{Err: redactedError{err, secret}}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		fe.Code = sanitize(re.ErrorCode, secret, 64)
		fe.Description = sanitize(re.ErrorDescription, secret, 200)
		fe.Err = nil
		if re.Response != nil {
			fe.Status = re.Response.StatusCode
			fe.ContentType = sanitize(re.Response.Header.Get("Content-Type"), secret, 100)
			if fe.Status == http.StatusTooManyRequests || fe.Status == http.StatusServiceUnavailable {
				fe.RetryAfter = parseRetryAfter(re.Response.Header.Get("Retry-After"), time.Now())
			}
		}
		if fe.Code != "" {
			fe.Kind = "oauth"
			return fe
		}
		fe.Kind = KindHTTPStatus
		fe.Excerpt = sanitize(string(re.Body), secret, 200)
		return fe
	}
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()):
		fe.Kind = KindTimeout
	case info.status != 0:
		// A response arrived but was not a token: not JSON, truncated,
		// empty, or without access_token.
		fe.Kind = KindBadResponse
		fe.Status = info.status
		fe.ContentType = sanitize(info.contentType, secret, 100)
		fe.Excerpt = sanitize(info.excerpt(), secret, 200)
	default:
		fe.Kind = KindNetwork
	}
	return fe
}

// parseRetryAfter reads Retry-After as delay-seconds or an HTTP date
// (RFC 9110 section 10.2.3). It returns zero when the value is absent or
// invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, 24*3600)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// credentialPattern matches token and secret values in JSON or form bodies.
var credentialPattern = regexp.MustCompile(
	`(?i)((?:access_token|refresh_token|id_token|client_secret|client_assertion)"?\s*[:=]\s*"?)[^"&,\s}]*`)

// authorizationPattern matches the credentials of a Basic or Bearer
// Authorization value, as in an error page that echoes the token request.
var authorizationPattern = regexp.MustCompile(`(?i)\b(basic|bearer)(\s+)[A-Za-z0-9._~+/=-]+`)

// sanitize shortens s to at most limit bytes of printable text and removes
// the secret and anything that looks like a token or secret value.
func sanitize(s, secret string, limit int) string {
	if secret != "" {
		s = strings.ReplaceAll(s, secret, "[REDACTED]")
	}
	s = credentialPattern.ReplaceAllString(s, "${1}[REDACTED]")
	s = authorizationPattern.ReplaceAllString(s, "${1}${2}[REDACTED]")
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return s
}

// redactedError hides the secret in a wrapped library error's text.
type redactedError struct {
	err    error
	secret string
}

func (e redactedError) Error() string { return sanitize(e.err.Error(), e.secret, 500) }
func (e redactedError) Unwrap() error { return e.err }

type responseInfoKey struct{}

// responseInfo records what a token response looked like.
type responseInfo struct {
	status      int
	contentType string
	// mu guards head and dropped.
	mu sync.Mutex
	// head is the body as read, up to maxTokenBody bytes.
	head    []byte
	dropped bool
}

// excerptBytes is the length of the body excerpt kept for error messages.
const excerptBytes = 512

// maxTokenBody is the most golang.org/x/oauth2 reads of a token response.
const maxTokenBody = 1 << 20

func (i *responseInfo) excerpt() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return string(i.head[:min(len(i.head), excerptBytes)])
}

func (i *responseInfo) body() []byte {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.head
}

// truncated reports whether the body was longer than maxTokenBody.
func (i *responseInfo) truncated() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.dropped
}

// recordingTransport fills the responseInfo found in the request context.
type recordingTransport struct{ base http.RoundTripper }

func (t recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	info, _ := req.Context().Value(responseInfoKey{}).(*responseInfo)
	if err != nil || info == nil {
		return resp, err
	}
	info.status = resp.StatusCode
	info.contentType = resp.Header.Get("Content-Type")
	resp.Body = &headRecorder{ReadCloser: resp.Body, info: info}
	return resp, nil
}

// headRecorder keeps the first maxTokenBody bytes read from a body.
type headRecorder struct {
	io.ReadCloser
	info *responseInfo
}

func (h *headRecorder) Read(p []byte) (int, error) {
	n, err := h.ReadCloser.Read(p)
	if n > 0 {
		h.info.mu.Lock()
		room := maxTokenBody - len(h.info.head)
		h.info.head = append(h.info.head, p[:min(n, room)]...)
		h.info.dropped = h.info.dropped || n > room
		h.info.mu.Unlock()
	}
	return n, err
}
