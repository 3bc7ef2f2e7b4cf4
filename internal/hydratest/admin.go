package hydratest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// AuthMethod is an OAuth2 client authentication method at the token endpoint
// (the token_endpoint_auth_method client metadata of RFC 7591).
type AuthMethod string

// Client authentication methods that Hydra v2.3.0 supports for confidential
// clients. Hydra accepts only the one method configured for each client.
const (
	// ClientSecretBasic sends the client ID and secret in an HTTP Basic
	// Authorization header, each form-encoded first (RFC 6749 section 2.3.1).
	ClientSecretBasic AuthMethod = "client_secret_basic"

	// ClientSecretPost sends client_id and client_secret as form parameters
	// in the request body.
	ClientSecretPost AuthMethod = "client_secret_post"

	// PrivateKeyJWT authenticates with a JWT signed by the client's private
	// key (RFC 7523 section 2.2). The client's public keys go in
	// ClientSpec.JWKS.
	PrivateKeyJWT AuthMethod = "private_key_jwt"
)

// ClientSpec describes an OAuth2 client for CreateClient. The client may use
// only the client_credentials grant.
type ClientSpec struct {
	// ID is the client ID. Hydra generates a UUID when it is empty.
	ID string

	// Secret is the client secret. Hydra v2.3.0 generates one when it is
	// empty, even for PrivateKeyJWT clients, which never use it.
	Secret string

	// AuthMethod is the client's token endpoint auth method. The default is
	// ClientSecretBasic.
	AuthMethod AuthMethod

	// JWKS is the client's JSON Web Key Set (RFC 7517) with the public keys
	// that verify its assertions, for PrivateKeyJWT. PublicJWKS builds one.
	JWKS json.RawMessage

	// SigningAlg is the JWS algorithm of the client's assertions, such as
	// "ES256", for PrivateKeyJWT. Hydra v2.3.0 defaults to RS256.
	SigningAlg string

	// Scopes are the scopes the client may request.
	Scopes []string

	// Audience lists the audiences the client may request.
	Audience []string
}

// Client is an OAuth2 client that CreateClient registered.
type Client struct {
	ID         string
	Secret     string // unused by PrivateKeyJWT clients
	AuthMethod AuthMethod
}

// hydraClient is the subset of Hydra's OAuth2 client JSON that this package
// sends and reads.
type hydraClient struct {
	ClientID       string          `json:"client_id,omitempty"`
	ClientSecret   string          `json:"client_secret,omitempty"`
	GrantTypes     []string        `json:"grant_types"`
	ResponseTypes  []string        `json:"response_types"`
	Scope          string          `json:"scope"`
	Audience       []string        `json:"audience"`
	AuthMethod     AuthMethod      `json:"token_endpoint_auth_method"`
	AuthSigningAlg string          `json:"token_endpoint_auth_signing_alg,omitempty"`
	JSONWebKeys    json.RawMessage `json:"jwks,omitempty"`
}

// CreateClient registers a client_credentials client with Hydra through
// POST /admin/clients and returns its ID and secret.
func (h *Hydra) CreateClient(t testing.TB, spec ClientSpec) Client {
	t.Helper()
	method := spec.AuthMethod
	if method == "" {
		method = ClientSecretBasic
	}
	if method == PrivateKeyJWT && len(spec.JWKS) == 0 {
		t.Fatalf("hydratest: create client %q: %s needs ClientSpec.JWKS", spec.ID, PrivateKeyJWT)
	}
	body := hydraClient{
		ClientID:       spec.ID,
		ClientSecret:   spec.Secret,
		GrantTypes:     []string{"client_credentials"},
		ResponseTypes:  []string{"token"},
		Scope:          strings.Join(spec.Scopes, " "),
		Audience:       spec.Audience,
		AuthMethod:     method,
		AuthSigningAlg: spec.SigningAlg,
		JSONWebKeys:    spec.JWKS,
	}
	if body.Audience == nil {
		body.Audience = []string{}
	}

	var created hydraClient
	if err := h.adminJSON(context.Background(), http.MethodPost, "/admin/clients", body, http.StatusCreated, &created); err != nil {
		t.Fatalf("hydratest: create client %q: %v", spec.ID, err)
	}

	h.mu.Lock()
	h.authMethods[created.ClientID] = method
	h.mu.Unlock()
	return Client{ID: created.ClientID, Secret: created.ClientSecret, AuthMethod: method}
}

// SetClientLifespan sets the lifetime of the access tokens that Hydra issues
// to the client in the client_credentials grant, through
// PUT /admin/clients/{id}/lifespans. Tokens issued before keep their
// lifetime. The call resets the client's other lifespans to Hydra's defaults.
// Hydra v2.3.0 routes on the decoded URL path, so it returns 404 for a client
// ID that contains "/", even escaped.
func (h *Hydra) SetClientLifespan(t testing.TB, clientID string, lifespan time.Duration) {
	t.Helper()
	body := map[string]string{"client_credentials_grant_access_token_lifespan": lifespan.String()}
	path := "/admin/clients/" + url.PathEscape(clientID) + "/lifespans"
	if err := h.adminJSON(context.Background(), http.MethodPut, path, body, http.StatusOK, nil); err != nil {
		t.Fatalf("hydratest: set lifespan of client %q to %v: %v", clientID, lifespan, err)
	}
}

// SetClientSecret replaces the client's secret through a JSON Patch
// (RFC 6902) at PATCH /admin/clients/{id}. The old secret stops working at
// once, and tokens issued before stay active. Like SetClientLifespan, it
// fails for a client ID that contains "/".
func (h *Hydra) SetClientSecret(t testing.TB, clientID, secret string) {
	t.Helper()
	patch := []map[string]string{{"op": "replace", "path": "/client_secret", "value": secret}}
	path := "/admin/clients/" + url.PathEscape(clientID)
	if err := h.adminJSON(context.Background(), http.MethodPatch, path, patch, http.StatusOK, nil); err != nil {
		t.Fatalf("hydratest: set secret of client %q: %v", clientID, err)
	}
}

// RevokeClientTokens revokes every access token issued to the client,
// through DELETE /admin/oauth2/tokens. Unlike Revoke it works for clients of
// any auth method.
func (h *Hydra) RevokeClientTokens(t testing.TB, clientID string) {
	t.Helper()
	path := "/admin/oauth2/tokens?client_id=" + url.QueryEscape(clientID)
	if err := h.adminJSON(context.Background(), http.MethodDelete, path, nil, http.StatusNoContent, nil); err != nil {
		t.Fatalf("hydratest: revoke tokens of client %q: %v", clientID, err)
	}
}

// Introspection is an RFC 7662 token introspection response.
type Introspection struct {
	Active    bool     `json:"active"`
	Scope     string   `json:"scope,omitempty"` // space-separated
	Audience  []string `json:"aud,omitempty"`
	ClientID  string   `json:"client_id,omitempty"`
	Subject   string   `json:"sub,omitempty"`
	Issuer    string   `json:"iss,omitempty"`
	ExpiresAt int64    `json:"exp,omitempty"` // seconds since the Unix epoch
	IssuedAt  int64    `json:"iat,omitempty"` // seconds since the Unix epoch
	NotBefore int64    `json:"nbf,omitempty"` // seconds since the Unix epoch
	TokenType string   `json:"token_type,omitempty"`
	TokenUse  string   `json:"token_use,omitempty"`
}

// Scopes returns the scopes in Scope.
func (i Introspection) Scopes() []string { return strings.Fields(i.Scope) }

// Expiry returns ExpiresAt as a time, or the zero time when it is unset.
func (i Introspection) Expiry() time.Time {
	if i.ExpiresAt == 0 {
		return time.Time{}
	}
	return time.Unix(i.ExpiresAt, 0)
}

// Introspect sends token to Hydra's introspection endpoint (RFC 7662),
// POST /admin/oauth2/introspect, and returns the result. It returns an error,
// never a test failure, so that HTTP handlers may call it.
func (h *Hydra) Introspect(ctx context.Context, token string) (Introspection, error) {
	form := url.Values{"token": {token}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.IntrospectionURL(), strings.NewReader(form.Encode()))
	if err != nil {
		return Introspection{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")

	var result Introspection
	if err := h.do(req, http.StatusOK, &result); err != nil {
		return Introspection{}, fmt.Errorf("introspect token: %w", err)
	}
	return result, nil
}

// Revoke revokes token at Hydra's public revocation endpoint (RFC 7009),
// authenticating as the client with its secret. The client must have been
// created by CreateClient with ClientSecretBasic or ClientSecretPost. A
// client that CreateClient did not register is treated as ClientSecretBasic.
func (h *Hydra) Revoke(t testing.TB, clientID, secret, token string) {
	t.Helper()
	h.mu.Lock()
	method, ok := h.authMethods[clientID]
	h.mu.Unlock()
	if !ok {
		method = ClientSecretBasic
	}

	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	switch method {
	case ClientSecretBasic:
	case ClientSecretPost:
		form.Set("client_id", clientID)
		form.Set("client_secret", secret)
	default:
		t.Fatalf("hydratest: revoke token of client %q: auth method %s has no secret; use RevokeClientTokens", clientID, method)
	}

	req, err := http.NewRequest(http.MethodPost, h.RevocationURL(), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatalf("hydratest: revoke token of client %q: %v", clientID, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if method == ClientSecretBasic {
		// RFC 6749 section 2.3.1: form-encode the ID and secret before
		// Basic encoding, which Hydra v2.3.0 decodes.
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	}
	if err := h.do(req, http.StatusOK, nil); err != nil {
		t.Fatalf("hydratest: revoke token of client %q: %v", clientID, err)
	}
}

// adminJSON sends body as JSON to the admin port and decodes the response
// into out when out is not nil.
func (h *Hydra) adminJSON(ctx context.Context, method, path string, body any, wantStatus int, out any) error {
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.adminURL+path, reader)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	return h.do(req, wantStatus, out)
}

// do sends req and checks its status. It decodes a JSON response into out
// when out is not nil.
func (h *Hydra) do(req *http.Request, wantStatus int, out any) error {
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode != wantStatus {
		return fmt.Errorf("%s %s: status %s, expected %d: %s", req.Method, req.URL.Path, resp.Status, wantStatus, bytes.TrimSpace(data))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", req.Method, req.URL.Path, err)
	}
	return nil
}
