package tokencache_test

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authproxy/authproxy/tokencache"
)

// tokenServer starts a loopback token endpoint that responds to every request
// with status, content type and body, and records the last request.
func tokenServer(t *testing.T, status int, contentType, body string) (*httptest.Server, *atomic.Pointer[http.Request], *atomic.Pointer[string]) {
	t.Helper()
	var last atomic.Pointer[http.Request]
	var form atomic.Pointer[string]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s := string(b)
		form.Store(&s)
		last.Store(r)
		if contentType != "" {
			w.Header().Set("Content-Type", contentType)
		}
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, &last, &form
}

func fetcher(url string, method tokencache.AuthMethod) *tokencache.ClientCredentials {
	return &tokencache.ClientCredentials{
		TokenURL: url,
		ClientID: "svc:reporting",
		Secret:   tokencache.StaticSecret("foo%Qbar/+ x"),
		Method:   method,
		Scopes:   []string{"tasks:read", "tasks:write"},
		Params:   url2Values("audience", "https://api.example.test"),
	}
}

func url2Values(k, v string) url.Values { return url.Values{k: {v}} }

func TestClientCredentials_BasicAuthIsFormEncoded(t *testing.T) {
	srv, last, form := tokenServer(t, 200, "application/json", `{"access_token":"tok-1","token_type":"bearer","expires_in":3600}`)
	if _, err := fetcher(srv.URL, tokencache.ClientSecretBasic).Fetch(context.Background()); err != nil {
		t.Fatalf("Fetch() error = %v", err)
	}
	auth := last.Load().Header.Get("Authorization")
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(auth, "Basic "))
	if err != nil {
		t.Fatalf("Authorization %q is not Basic base64: %v", auth, err)
	}
	// RFC 6749 section 2.3.1: each part form-encoded before Basic encoding.
	if want := "svc%3Areporting:foo%25Qbar%2F%2B+x"; string(raw) != want {
		t.Errorf("Basic credentials = %q; want %q", raw, want)
	}
	values, _ := url.ParseQuery(*form.Load())
	if values.Has("client_secret") {
		t.Errorf("body has client_secret with client_secret_basic: %q", *form.Load())
	}
	if got := values.Get("grant_type"); got != "client_credentials" {
		t.Errorf("grant_type = %q; want client_credentials", got)
	}
	if got := values.Get("scope"); got != "tasks:read tasks:write" {
		t.Errorf("scope = %q; want %q", got, "tasks:read tasks:write")
	}
	if got := values.Get("audience"); got != "https://api.example.test" {
		t.Errorf("audience = %q; want https://api.example.test", got)
	}
}

func TestClientCredentials_PostSendsCredentialsInBody(t *testing.T) {
	srv, last, form := tokenServer(t, 200, "application/json", `{"access_token":"tok-1","token_type":"Bearer","expires_in":60}`)
	if _, err := fetcher(srv.URL, tokencache.ClientSecretPost).Fetch(context.Background()); err != nil {
		t.Fatalf("Fetch() error = %v", err)
	}
	if auth := last.Load().Header.Get("Authorization"); auth != "" {
		t.Errorf("Authorization = %q; want none with client_secret_post", auth)
	}
	values, _ := url.ParseQuery(*form.Load())
	if got := values.Get("client_id"); got != "svc:reporting" {
		t.Errorf("client_id = %q; want svc:reporting", got)
	}
	if got := values.Get("client_secret"); got != "foo%Qbar/+ x" {
		t.Errorf("client_secret = %q; want the configured secret", got)
	}
}

func TestClientCredentials_Grant(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		wantType string
		wantLife time.Duration
	}{
		{"number expires_in", `{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}`, "Bearer", time.Hour},
		{"string expires_in", `{"access_token":"tok-1","token_type":"bearer","expires_in":"3599"}`, "bearer", 3599 * time.Second},
		{"missing expires_in", `{"access_token":"tok-1","token_type":"BEARER"}`, "BEARER", 0},
		{"zero expires_in", `{"access_token":"tok-1","token_type":"Bearer","expires_in":0}`, "Bearer", 0},
		{"missing token_type", `{"access_token":"tok-1","expires_in":60}`, "", time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _, _ := tokenServer(t, 200, "application/json", tt.body)
			g, err := fetcher(srv.URL, tokencache.ClientSecretBasic).Fetch(context.Background())
			if err != nil {
				t.Fatalf("Fetch() error = %v", err)
			}
			if g.AccessToken != "tok-1" {
				t.Errorf("AccessToken = %q; want tok-1", g.AccessToken)
			}
			if g.TokenType != tt.wantType {
				t.Errorf("TokenType = %q; want %q", g.TokenType, tt.wantType)
			}
			if g.ExpiresIn != tt.wantLife {
				t.Errorf("ExpiresIn = %v; want %v", g.ExpiresIn, tt.wantLife)
			}
		})
	}
}

func TestClientCredentials_Errors(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		contentType string
		body        string
		wantLabel   string
		wantStatus  int
		wantRetry   time.Duration
		wantCred    bool
		wantInError string
	}{
		{"invalid_client 400", 400, "application/json", `{"error":"invalid_client","error_description":"invalid client credentials"}`, "invalid_client", 400, 0, true, "invalid client credentials"},
		{"invalid_client 401", 401, "application/json", `{"error":"invalid_client"}`, "invalid_client", 401, 0, true, "invalid_client"},
		{"unauthorized_client", 400, "application/json", `{"error":"unauthorized_client"}`, "unauthorized_client", 400, 0, true, "unauthorized_client"},
		{"unknown code", 400, "application/json", `{"error":"weird_thing"}`, "other_oauth_error", 400, 0, false, "weird_thing"},
		{"error in a 200", 200, "application/json", `{"error":"invalid_scope","error_description":"nope"}`, "invalid_scope", 200, 0, false, "nope"},
		{"503 with Retry-After", 503, "text/html", `<html>maintenance</html>`, "http_status", 503, 7 * time.Second, false, "maintenance"},
		{"429 with Retry-After", 429, "application/json", `{}`, "http_status", 429, 7 * time.Second, false, "429"},
		{"500 keeps no Retry-After", 500, "text/plain", `boom`, "http_status", 500, 0, false, "boom"},
		{"html 200", 200, "text/html", `<html>maintenance</html>`, "bad_response", 200, 0, false, "text/html"},
		{"empty 200", 200, "application/json", ``, "bad_response", 200, 0, false, "200"},
		{"truncated json", 200, "application/json", `{"access_token":"tok-1","tok`, "bad_response", 200, 0, false, "200"},
		{"no access_token", 200, "application/json", `{"token_type":"Bearer"}`, "bad_response", 200, 0, false, "access_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _, _ := tokenServer(t, tt.status, tt.contentType, tt.body)
			_, err := fetcher(srv.URL, tokencache.ClientSecretBasic).Fetch(context.Background())
			var fe *tokencache.FetchError
			if !errors.As(err, &fe) {
				t.Fatalf("Fetch() error = %v (%T); want *FetchError", err, err)
			}
			if got := fe.Label(); got != tt.wantLabel {
				t.Errorf("Label() = %q; want %q", got, tt.wantLabel)
			}
			if fe.Status != tt.wantStatus {
				t.Errorf("Status = %d; want %d", fe.Status, tt.wantStatus)
			}
			if fe.RetryAfter != tt.wantRetry {
				t.Errorf("RetryAfter = %v; want %v", fe.RetryAfter, tt.wantRetry)
			}
			if got := fe.IsCredentialError(); got != tt.wantCred {
				t.Errorf("IsCredentialError() = %v; want %v", got, tt.wantCred)
			}
			if !strings.Contains(err.Error(), tt.wantInError) {
				t.Errorf("Error() = %q; want it to mention %q", err.Error(), tt.wantInError)
			}
		})
	}
}

func TestClientCredentials_ErrorHidesSecretAndTokens(t *testing.T) {
	// A broken endpoint that echoes the request body, secret included.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.WriteHeader(500)
		_, _ = w.Write(b)
		_, _ = io.WriteString(w, ` {"access_token":"leaked-token-value"}`)
	}))
	t.Cleanup(srv.Close)
	_, err := fetcher(srv.URL, tokencache.ClientSecretPost).Fetch(context.Background())
	if err == nil {
		t.Fatal("Fetch() error = nil; want an error for status 500")
	}
	for _, leak := range []string{"foo%Qbar/+ x", "foo%25Qbar", "leaked-token-value"} {
		if strings.Contains(err.Error(), leak) {
			t.Errorf("Error() = %q; contains %q", err.Error(), leak)
		}
	}
}

func TestClientCredentials_NetworkErrors(t *testing.T) {
	ln := httptest.NewServer(http.NotFoundHandler())
	addr := ln.URL
	ln.Close() // nothing listens there now
	_, err := fetcher(addr, tokencache.ClientSecretBasic).Fetch(context.Background())
	var fe *tokencache.FetchError
	if !errors.As(err, &fe) || fe.Kind != tokencache.KindNetwork {
		t.Errorf("Fetch() to a closed port error = %v; want kind network", err)
	}

	release := make(chan struct{})
	stall := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(stall.Close)
	t.Cleanup(func() { close(release) })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = fetcher(stall.URL, tokencache.ClientSecretBasic).Fetch(ctx)
	if !errors.As(err, &fe) || fe.Kind != tokencache.KindTimeout {
		t.Errorf("Fetch() to a stalled server error = %v; want kind timeout", err)
	}
}
