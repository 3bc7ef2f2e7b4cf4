package hydra_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/authproxy/authproxy/internal/hydratest"
)

// TestWrongCredentials runs the sidecar with a secret that Hydra rejects.
// The log must carry Hydra's invalid_client error and description but never
// the secret, the sidecar must report not ready, callers must get 503
// token_unavailable with Retry-After, and the sidecar must not hammer the
// token endpoint.
func TestWrongCredentials(t *testing.T) {
	const observeFor = 4 * time.Second
	h := hydratest.Start(t)
	up := hydratest.NewIntrospectingUpstream(t, h)
	recorder := newRecordingProxy(t, h.PublicURL())
	client := h.CreateClient(t, hydratest.ClientSpec{ID: "wrong-secret-client", Secret: "the-registered-secret"})
	wrongSecret := "wrong-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	hydraDescription := hydraErrorDescription(t, h, client.ID, wrongSecret)

	env := sidecarEnv(h, up, client)
	env["CLIENT_SECRET"] = wrongSecret
	env["TOKEN_URL"] = recorder.URL() + "/oauth2/token"
	s := startSidecar(t, env)
	status := waitForFailedFetch(t, s)
	if status.LastErrorCode != "invalid_client" {
		t.Errorf("/tokenz last_error_code: got %q; want invalid_client", status.LastErrorCode)
	}
	if !strings.HasPrefix(hydraDescription, strings.TrimSuffix(status.LastErrorDesc, "...")) || status.LastErrorDesc == "" {
		t.Errorf("/tokenz last_error_description: got %q; want Hydra's %q", status.LastErrorDesc, hydraDescription)
	}
	if status.Valid {
		t.Error("/tokenz valid: got true; want false")
	}

	entry, ok := s.findLog("token endpoint rejected the client credentials; check CLIENT_ID and the client secret")
	if !ok {
		t.Fatal("the log has no line about the rejected client credentials")
	}
	if got := entry.str("level"); got != "error" {
		t.Errorf("credential error log level: got %q; want error", got)
	}
	if got := entry.str("oauth_error"); got != "invalid_client" {
		t.Errorf("credential error oauth_error: got %q; want invalid_client", got)
	}
	// The sidecar shortens descriptions longer than 200 bytes and marks the
	// cut with "...".
	description := entry.str("oauth_error_description")
	if description == "" || !strings.HasPrefix(hydraDescription, strings.TrimSuffix(description, "...")) {
		t.Errorf("credential error oauth_error_description: got %q; want Hydra's %q", description, hydraDescription)
	}

	if got := s.adminStatus(t, "/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("GET /readyz status: got %d; want 503", got)
	}

	// Callers keep sending requests for observeFor. The sidecar must reject
	// each from its backoff state instead of sending Hydra a new request.
	deadline := time.Now().Add(observeFor)
	for i := 0; time.Now().Before(deadline); i++ {
		resp := s.do(t, http.MethodGet, "/api/tasks", nil)
		checkTokenUnavailable(t, resp)
		if strings.Contains(string(resp.Body), wrongSecret) {
			t.Fatal("the 503 body contains the client secret")
		}
		time.Sleep(200 * time.Millisecond)
	}

	tokenRequests := len(recorder.Requests("/oauth2/token"))
	if tokenRequests < 1 || tokenRequests > 3 {
		t.Errorf("token requests in about %v: got %d; want between 1 and 3", observeFor, tokenRequests)
	}
	failed := s.metric(t, "authproxy_token_fetches_total", map[string]string{"outcome": "failure", "error_code": "invalid_client"})
	if int(failed) != tokenRequests {
		t.Errorf("authproxy_token_fetches_total{outcome=\"failure\",error_code=\"invalid_client\"}: got %v; want %d, the requests Hydra received", failed, tokenRequests)
	}
	if got := s.tokenz(t).ConsecutiveFailures; got != tokenRequests {
		t.Errorf("/tokenz consecutive_failures: got %d; want %d, the requests Hydra received", got, tokenRequests)
	}
	if up.Accepted()+up.Rejected() != 0 {
		t.Errorf("requests that reached the upstream: got %d; want 0", up.Accepted()+up.Rejected())
	}
	if strings.Contains(s.log.String(), wrongSecret) {
		t.Error("the sidecar log contains the client secret")
	}
}

// checkTokenUnavailable checks the sidecar's response when it has no token:
// 503 with a JSON token_unavailable error and a Retry-After in seconds.
func checkTokenUnavailable(t *testing.T, resp response) {
	t.Helper()
	if resp.Status != http.StatusServiceUnavailable {
		t.Fatalf("GET /api/tasks status: got %d; want 503; body: %s", resp.Status, resp.Body)
	}
	if got := resp.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("503 Content-Type: got %q; want application/json", got)
	}
	if code, _ := decodeError(t, resp.Body); code != "token_unavailable" {
		t.Errorf("503 error code: got %q; want token_unavailable", code)
	}
	retryAfter, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || retryAfter < 1 {
		t.Errorf("503 Retry-After: got %q; want a whole number of seconds, at least 1", resp.Header.Get("Retry-After"))
	}
}

// hydraErrorDescription sends a token request with secret straight to Hydra
// and returns the error_description of its rejection.
func hydraErrorDescription(t *testing.T, h *hydratest.Hydra, clientID, secret string) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}}
	req, err := http.NewRequest(http.MethodPost, h.TokenURL(), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("token request to Hydra: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		t.Fatalf("decode Hydra's error response: %v", err)
	}
	if body.Error != "invalid_client" || body.Description == "" {
		t.Fatalf("Hydra's answer to a wrong secret: got error %q, description %q; want invalid_client with a description", body.Error, body.Description)
	}
	return body.Description
}

// TestIssuerDiscovery starts the sidecar with ISSUER_URL instead of
// TOKEN_URL. Hydra v2.3.0 lists client_secret_post, client_secret_basic,
// private_key_jwt and none in token_endpoint_auth_methods_supported, so the
// case of an unlisted method uses a copy of Hydra's metadata with
// client_secret_basic removed.
func TestIssuerDiscovery(t *testing.T) {
	h := hydratest.Start(t)
	up := hydratest.NewIntrospectingUpstream(t, h)
	client := h.CreateClient(t, hydratest.ClientSpec{ID: "discovering-client", Secret: "discovering-secret"})

	issuers := []struct {
		name string
		url  string
	}{
		{"issuer", h.IssuerURL()},
		{"issuer with trailing slash", h.IssuerURL() + "/"},
	}
	for _, issuer := range issuers {
		t.Run(issuer.name, func(t *testing.T) {
			env := sidecarEnv(h, up, client)
			delete(env, "TOKEN_URL")
			env["ISSUER_URL"] = issuer.url
			// Hydra v2.3.0 creates its signing keys on the first discovery
			// request, which took about 2 s on a 2-core machine.
			s := startSidecar(t, env)
			// /healthz returns 200 while the metadata is still being read.
			s.waitReady(t)

			got := s.getTasks(t)
			if got.ClientID != client.ID {
				t.Errorf("token client_id: got %q; want %q", got.ClientID, client.ID)
			}
			entry, ok := s.findLog("discovered token endpoint")
			if !ok {
				t.Fatal("the log has no line about the discovered token endpoint")
			}
			if got := entry.str("token_url"); got != h.TokenURL() {
				t.Errorf("discovered token_url: got %q; want %q", got, h.TokenURL())
			}
		})
	}

	t.Run("unlisted auth method", func(t *testing.T) {
		issuer := newFilteredMetadataServer(t, h, "client_secret_basic")
		env := sidecarEnv(h, up, client)
		delete(env, "TOKEN_URL")
		env["ISSUER_URL"] = issuer
		env["TOKEN_AUTH_METHOD"] = "client_secret_basic"

		code, log := runSidecarToExit(t, env, 30*time.Second)
		if code == 0 {
			t.Errorf("exit code: got 0; want non-zero")
		}
		if !strings.Contains(log, "TOKEN_AUTH_METHOD") {
			t.Errorf("log does not name TOKEN_AUTH_METHOD:\n%s", log)
		}
		if !strings.Contains(log, "client_secret_post") {
			t.Errorf("log does not list the methods the issuer supports:\n%s", log)
		}
		if strings.Contains(log, "obtained first token") {
			t.Error("the sidecar fetched a token with the unlisted method")
		}
	})
}

// newFilteredMetadataServer serves Hydra's OpenID Connect discovery document
// on 127.0.0.1 with its own URL as the issuer and without the auth method
// removed, and returns its URL as the issuer.
func newFilteredMetadataServer(t *testing.T, h *hydratest.Hydra, removed string) string {
	t.Helper()
	var issuer string
	server := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		meta, err := fetchJSON(h.PublicURL() + "/.well-known/openid-configuration")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		methods, _ := meta["token_endpoint_auth_methods_supported"].([]any)
		meta["token_endpoint_auth_methods_supported"] = slices.DeleteFunc(methods, func(m any) bool { return m == removed })
		meta["issuer"] = issuer
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(meta)
	}))
	// The issuer is known before the server starts, so the handler reads
	// a value that no goroutine writes afterwards.
	issuer = "http://" + server.Listener.Addr().String()
	server.Start()
	t.Cleanup(server.Close)
	return issuer
}

func fetchJSON(u string) (map[string]any, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %s", u, resp.Status)
	}
	var out map[string]any
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return nil, fmt.Errorf("GET %s: decode JSON: %w", u, err)
	}
	return out, nil
}
