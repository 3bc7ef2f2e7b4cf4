package hydratest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/authproxy/authproxy/internal/hydratest"
)

// Client credentials with the characters that RFC 6749 section 2.3.1
// form-encoding changes, so a client that sends them raw in the Basic header
// fails against Hydra.
const (
	reservedCharsID     = "svc:tasks%20/x+y z"
	reservedCharsSecret = "s3:cr%et/p+q r"
)

// tokenResponse is the token endpoint's JSON response (RFC 6749 section 5.1).
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   *int64 `json:"expires_in"`
	Scope       string `json:"scope"`
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestHarnessClientSecretBasic runs the client_credentials flow that the
// sidecar uses against Hydra v2.3.0: token, introspection, revocation.
func TestHarnessClientSecretBasic(t *testing.T) {
	h := hydratest.Start(t)
	ctx := testContext(t)
	const audience = "https://tasks.example"

	client := h.CreateClient(t, hydratest.ClientSpec{
		ID:       reservedCharsID,
		Secret:   reservedCharsSecret,
		Scopes:   []string{"tasks.read", "tasks.write"},
		Audience: []string{audience},
	})
	if client.ID != reservedCharsID {
		t.Errorf("client ID = %q, expected %q", client.ID, reservedCharsID)
	}
	if client.Secret != reservedCharsSecret {
		t.Errorf("client secret = %q, expected %q", client.Secret, reservedCharsSecret)
	}

	// clientcredentials form-encodes the ID and secret before Basic encoding
	// them, as RFC 6749 section 2.3.1 requires.
	config := clientcredentials.Config{
		ClientID:       client.ID,
		ClientSecret:   client.Secret,
		TokenURL:       h.TokenURL(),
		Scopes:         []string{"tasks.read"},
		EndpointParams: url.Values{"audience": {audience}},
		AuthStyle:      oauth2.AuthStyleInHeader,
	}
	issuedAt := time.Now()
	token, err := config.Token(ctx)
	if err != nil {
		t.Fatalf("fetch token: %v", err)
	}
	if token.AccessToken == "" {
		t.Fatal("access token is empty")
	}
	// Hydra v2.3.0 returns token_type "bearer" in lower case.
	if token.TokenType != "bearer" {
		t.Errorf("token_type = %q, expected %q", token.TokenType, "bearer")
	}
	// With no lifespan configured, Hydra v2.3.0 issues tokens for one hour.
	// clientcredentials turns expires_in into Expiry.
	wantExpiry := issuedAt.Add(time.Hour)
	if diff := token.Expiry.Sub(wantExpiry); diff < -3*time.Second || diff > time.Second {
		t.Errorf("token expiry = %v, expected about %v", token.Expiry, wantExpiry)
	}

	info, err := h.Introspect(ctx, token.AccessToken)
	if err != nil {
		t.Fatalf("introspect: %v", err)
	}
	if !info.Active {
		t.Fatalf("fresh token is inactive: %+v", info)
	}
	if got := info.Scopes(); !slices.Equal(got, []string{"tasks.read"}) {
		t.Errorf("scopes = %q, expected [tasks.read]", got)
	}
	if !slices.Equal(info.Audience, []string{audience}) {
		t.Errorf("audience = %q, expected [%s]", info.Audience, audience)
	}
	if info.ClientID != reservedCharsID {
		t.Errorf("client_id = %q, expected %q", info.ClientID, reservedCharsID)
	}
	if info.Issuer != h.IssuerURL() {
		t.Errorf("iss = %q, expected %q", info.Issuer, h.IssuerURL())
	}
	// Introspection in Hydra v2.3.0 spells the type "Bearer", unlike the
	// token response.
	if info.TokenType != "Bearer" {
		t.Errorf("introspection token_type = %q, expected %q", info.TokenType, "Bearer")
	}
	if diff := info.Expiry().Sub(wantExpiry); diff < -2*time.Second || diff > 2*time.Second {
		t.Errorf("exp = %v, expected about %v", info.Expiry(), wantExpiry)
	}

	h.Revoke(t, client.ID, client.Secret, token.AccessToken)
	info, err = h.Introspect(ctx, token.AccessToken)
	if err != nil {
		t.Fatalf("introspect after revocation: %v", err)
	}
	if info.Active {
		t.Errorf("revoked token is still active: %+v", info)
	}
}

// TestTokenResponseFields records the raw token response fields of Hydra
// v2.3.0: token_type is "bearer" in lower case, expires_in is the access
// token lifespan minus one second, and scope lists only requested scopes.
func TestTokenResponseFields(t *testing.T) {
	h := hydratest.Start(t)
	defaultClient := h.CreateClient(t, hydratest.ClientSpec{ID: "default-lifespan", Secret: "secret-1", Scopes: []string{"tasks.read"}})
	shortClient := h.CreateClient(t, hydratest.ClientSpec{ID: "short-lifespan", Secret: "secret-2", Scopes: []string{"tasks.read"}})
	h.SetClientLifespan(t, shortClient.ID, 10*time.Second)

	tests := []struct {
		name          string
		client        hydratest.Client
		form          url.Values
		wantExpiresIn int64
		wantScope     string
	}{
		{"default lifespan", defaultClient, url.Values{"scope": {"tasks.read"}}, 3599, "tasks.read"},
		{"10s lifespan", shortClient, url.Values{"scope": {"tasks.read"}}, 9, "tasks.read"},
		// Hydra v2.3.0 grants no scope that the request does not name.
		{"no scope requested", shortClient, url.Values{}, 9, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := postToken(t, h, tt.client.ID, tt.client.Secret, tt.form)
			if resp.TokenType != "bearer" {
				t.Errorf("token_type = %q, expected %q", resp.TokenType, "bearer")
			}
			if resp.ExpiresIn == nil {
				t.Error("expires_in is missing")
			} else if *resp.ExpiresIn != tt.wantExpiresIn {
				t.Errorf("expires_in = %d, expected %d", *resp.ExpiresIn, tt.wantExpiresIn)
			}
			if resp.Scope != tt.wantScope {
				t.Errorf("scope = %q, expected %q", resp.Scope, tt.wantScope)
			}
		})
	}
}

func TestClientSecretPost(t *testing.T) {
	h := hydratest.Start(t)
	ctx := testContext(t)
	client := h.CreateClient(t, hydratest.ClientSpec{
		ID:         "post-client",
		Secret:     reservedCharsSecret,
		AuthMethod: hydratest.ClientSecretPost,
		Scopes:     []string{"tasks.read"},
	})

	config := clientcredentials.Config{
		ClientID:     client.ID,
		ClientSecret: client.Secret,
		TokenURL:     h.TokenURL(),
		Scopes:       []string{"tasks.read"},
		AuthStyle:    oauth2.AuthStyleInParams,
	}
	token, err := config.Token(ctx)
	if err != nil {
		t.Fatalf("fetch token with client_secret_post: %v", err)
	}

	// Hydra v2.3.0 accepts only the client's configured auth method.
	config.AuthStyle = oauth2.AuthStyleInHeader
	_, err = config.Token(ctx)
	wantOAuthError(t, err, "invalid_client")

	h.Revoke(t, client.ID, client.Secret, token.AccessToken)
	info, err := h.Introspect(ctx, token.AccessToken)
	if err != nil {
		t.Fatalf("introspect: %v", err)
	}
	if info.Active {
		t.Error("token revoked with client_secret_post is still active")
	}
}

func TestPrivateKeyJWT(t *testing.T) {
	h := hydratest.Start(t)
	ctx := testContext(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := hydratest.PublicJWKS("key-1", &key.PublicKey)
	if err != nil {
		t.Fatalf("build JWKS: %v", err)
	}
	client := h.CreateClient(t, hydratest.ClientSpec{
		ID:         "jwt-client",
		AuthMethod: hydratest.PrivateKeyJWT,
		JWKS:       jwks,
		SigningAlg: "ES256",
		Scopes:     []string{"tasks.read"},
	})

	form := url.Values{
		"grant_type":            {"client_credentials"},
		"scope":                 {"tasks.read"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {signAssertion(t, key, "key-1", client.ID, h.TokenURL())},
	}
	resp := postForm(t, h.TokenURL(), form, "", "")
	if resp.AccessToken == "" {
		t.Fatal("access token is empty")
	}

	info, err := h.Introspect(ctx, resp.AccessToken)
	if err != nil {
		t.Fatalf("introspect: %v", err)
	}
	if !info.Active || info.ClientID != client.ID {
		t.Fatalf("introspection = %+v, expected an active token of %q", info, client.ID)
	}

	h.RevokeClientTokens(t, client.ID)
	info, err = h.Introspect(ctx, resp.AccessToken)
	if err != nil {
		t.Fatalf("introspect after revocation: %v", err)
	}
	if info.Active {
		t.Error("token is still active after RevokeClientTokens")
	}
}

func TestSetClientSecret(t *testing.T) {
	h := hydratest.Start(t)
	ctx := testContext(t)
	client := h.CreateClient(t, hydratest.ClientSpec{ID: "rotating", Secret: "old-secret"})
	oldToken := postToken(t, h, client.ID, "old-secret", url.Values{})

	h.SetClientSecret(t, client.ID, "new-secret")

	config := clientcredentials.Config{ClientID: client.ID, ClientSecret: "old-secret", TokenURL: h.TokenURL()}
	_, err := config.Token(ctx)
	wantOAuthError(t, err, "invalid_client")

	config.ClientSecret = "new-secret"
	if _, err := config.Token(ctx); err != nil {
		t.Errorf("fetch token with the new secret: %v", err)
	}

	info, err := h.Introspect(ctx, oldToken.AccessToken)
	if err != nil {
		t.Fatalf("introspect: %v", err)
	}
	if !info.Active {
		t.Error("token issued before the secret change is inactive")
	}
}

func TestIntrospectingUpstream(t *testing.T) {
	h := hydratest.Start(t)
	upstream := hydratest.NewIntrospectingUpstream(t, h)
	client := h.CreateClient(t, hydratest.ClientSpec{
		ID:       "upstream-client",
		Secret:   "upstream-secret",
		Scopes:   []string{"tasks.read"},
		Audience: []string{"tasks-api"},
	})
	token := postToken(t, h, client.ID, client.Secret, url.Values{"scope": {"tasks.read"}, "audience": {"tasks-api"}})

	if _, ok := upstream.LastIntrospection(); ok {
		t.Error("LastIntrospection reports a result before any request")
	}

	status, header, _ := getUpstream(t, upstream.URL()+"/api/tasks", "")
	if status != http.StatusUnauthorized {
		t.Errorf("without token: status %d, expected 401", status)
	}
	if got := header.Get("WWW-Authenticate"); got != "Bearer" {
		t.Errorf("without token: WWW-Authenticate = %q, expected %q", got, "Bearer")
	}

	status, header, _ = getUpstream(t, upstream.URL()+"/api/tasks", "not-a-token")
	if status != http.StatusUnauthorized {
		t.Errorf("invalid token: status %d, expected 401", status)
	}
	if got := header.Get("WWW-Authenticate"); !strings.HasPrefix(got, `Bearer error="invalid_token"`) {
		t.Errorf("invalid token: WWW-Authenticate = %q, expected a Bearer invalid_token challenge", got)
	}

	status, _, body := getUpstream(t, upstream.URL()+"/api/tasks?limit=2", token.AccessToken)
	if status != http.StatusOK {
		t.Fatalf("active token: status %d, expected 200: %s", status, body)
	}
	var got hydratest.UpstreamResponse
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("decode upstream response %q: %v", body, err)
	}
	want := hydratest.UpstreamResponse{
		Method:   http.MethodGet,
		Path:     "/api/tasks",
		Query:    "limit=2",
		ClientID: client.ID,
		Scopes:   []string{"tasks.read"},
		Audience: []string{"tasks-api"},
	}
	if got.Method != want.Method || got.Path != want.Path || got.Query != want.Query || got.ClientID != want.ClientID {
		t.Errorf("upstream response = %+v, expected %+v", got, want)
	}
	if !slices.Equal(got.Scopes, want.Scopes) {
		t.Errorf("upstream scopes = %q, expected %q", got.Scopes, want.Scopes)
	}
	if !slices.Equal(got.Audience, want.Audience) {
		t.Errorf("upstream audience = %q, expected %q", got.Audience, want.Audience)
	}

	if n := upstream.Accepted(); n != 1 {
		t.Errorf("Accepted = %d, expected 1", n)
	}
	if n := upstream.Rejected(); n != 2 {
		t.Errorf("Rejected = %d, expected 2", n)
	}
	if n := upstream.Errors(); n != 0 {
		t.Errorf("Errors = %d, expected 0", n)
	}
	last, ok := upstream.LastIntrospection()
	if !ok || !last.Active || !slices.Equal(last.Scopes(), []string{"tasks.read"}) {
		t.Errorf("LastIntrospection = %+v, %v; expected the active token with scope tasks.read", last, ok)
	}
	if r := upstream.LastRequest(); r == nil || r.Header.Get("Authorization") != "Bearer "+token.AccessToken {
		t.Errorf("LastRequest does not carry the token that was sent")
	}
}

// postToken fetches a client_credentials token with client_secret_basic and
// returns the raw response.
func postToken(t *testing.T, h *hydratest.Hydra, clientID, secret string, form url.Values) tokenResponse {
	t.Helper()
	form.Set("grant_type", "client_credentials")
	return postForm(t, h.TokenURL(), form, clientID, secret)
}

// postForm posts form to the token endpoint, with Basic credentials when
// clientID is not empty, and fails the test unless the status is 200.
func postForm(t *testing.T, tokenURL string, form url.Values, clientID, secret string) tokenResponse {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if clientID != "" {
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", tokenURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: read response: %v", tokenURL, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: status %s: %s", tokenURL, resp.Status, body)
	}
	var token tokenResponse
	if err := json.Unmarshal(body, &token); err != nil {
		t.Fatalf("decode token response %q: %v", body, err)
	}
	return token
}

func getUpstream(t *testing.T, target, token string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read response: %v", target, err)
	}
	return resp.StatusCode, resp.Header, body
}

// wantOAuthError checks that err is an OAuth2 error response with the code.
func wantOAuthError(t *testing.T, err error, code string) {
	t.Helper()
	var retrieveErr *oauth2.RetrieveError
	if !errors.As(err, &retrieveErr) {
		t.Errorf("error = %v, expected an OAuth2 %s error", err, code)
		return
	}
	if retrieveErr.ErrorCode != code {
		t.Errorf("error code = %q, expected %q (status %d)", retrieveErr.ErrorCode, code, retrieveErr.Response.StatusCode)
	}
}

// signAssertion returns an ES256 client assertion JWT for the token endpoint
// (RFC 7523 section 3).
func signAssertion(t *testing.T, key *ecdsa.PrivateKey, keyID, clientID, tokenURL string) string {
	t.Helper()
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	header := map[string]string{"alg": "ES256", "typ": "JWT", "kid": keyID}
	claims := map[string]any{
		"iss": clientID,
		"sub": clientID,
		"aud": tokenURL,
		"jti": hex.EncodeToString(jti),
		"iat": now.Unix(),
		"exp": now.Add(time.Minute).Unix(),
	}
	signingInput := encodeSegment(t, header) + "." + encodeSegment(t, claims)

	digest := sha256.Sum256([]byte(signingInput))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	// JWS ES256 signatures are R and S as 32-byte big-endian integers
	// (RFC 7518 section 3.4), not ASN.1.
	signature := make([]byte, 64)
	r.FillBytes(signature[:32])
	s.FillBytes(signature[32:])
	return signingInput + "." + base64.RawURLEncoding.EncodeToString(signature)
}

func encodeSegment(t *testing.T, value any) string {
	t.Helper()
	data, err := json.Marshal(value)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(data)
}
