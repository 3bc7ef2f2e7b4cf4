package taskmaster

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// testServer is a running test server with a token issued by it.
type testServer struct {
	*httptest.Server
	token string
}

func TestControlDisabledByDefault(t *testing.T) {
	_, ts := startServer(t, Config{})
	resp := do(t, ts, newRequest(t, ts, http.MethodGet, "/_control/stats", "", ""))
	if resp.status != http.StatusNotFound {
		t.Errorf("status got %d; want 404", resp.status)
	}
}

func TestControlStats(t *testing.T) {
	_, ts := startServer(t, Config{EnableControl: true})
	token := fetchToken(t, ts).AccessToken
	apiRequest(t, ts, http.MethodGet, "/api/tasks", token, "")

	resp := do(t, ts, newRequest(t, ts, http.MethodGet, "/_control/stats", "", ""))
	if resp.status != http.StatusOK {
		t.Fatalf("status got %d; want 200", resp.status)
	}
	var stats Stats
	decodeJSON(t, resp.body, &stats)
	want := Stats{TokenRequests: 1, APIRequests: 1, TokensIssued: 1, ActiveTokens: 1}
	if stats != want {
		t.Errorf("stats got %+v; want %+v", stats, want)
	}
}

func TestControlRecords(t *testing.T) {
	_, ts := startServer(t, Config{EnableControl: true})
	token := fetchToken(t, ts).AccessToken
	apiRequest(t, ts, http.MethodGet, "/api/tasks", token, "")

	var tokenRecords []TokenRequest
	decodeJSON(t, do(t, ts, newRequest(t, ts, http.MethodGet, "/_control/token-requests", "", "")).body, &tokenRecords)
	if len(tokenRecords) != 1 || tokenRecords[0].AuthMethod != AuthMethodBasic {
		t.Errorf("token records got %+v; want one basic request", tokenRecords)
	}
	var apiRecords []APIRequest
	decodeJSON(t, do(t, ts, newRequest(t, ts, http.MethodGet, "/_control/api-requests", "", "")).body, &apiRecords)
	if len(apiRecords) != 1 || apiRecords[0].Path != "/api/tasks" {
		t.Errorf("API records got %+v; want one request to /api/tasks", apiRecords)
	}

	resp := do(t, ts, newRequest(t, ts, http.MethodPost, "/_control/reset-records", "application/json", "{}"))
	if resp.status != http.StatusNoContent {
		t.Errorf("reset status got %d; want 204", resp.status)
	}
	decodeJSON(t, do(t, ts, newRequest(t, ts, http.MethodGet, "/_control/api-requests", "", "")).body, &apiRecords)
	if len(apiRecords) != 0 {
		t.Errorf("number of API records after reset got %d; want 0", len(apiRecords))
	}
}

func TestControlKnobs(t *testing.T) {
	tests := []struct {
		name  string
		path  string
		body  string
		check func(t *testing.T, server *Server, ts testServer)
	}{
		{
			name: "token lifetime",
			path: "/_control/token-lifetime",
			body: `{"lifetime":"90s"}`,
			check: func(t *testing.T, _ *Server, ts testServer) {
				if got := fetchToken(t, ts.Server).ExpiresIn; got != 90 {
					t.Errorf("expires_in got %d; want 90", got)
				}
			},
		},
		{
			name: "latency",
			path: "/_control/latency",
			body: `{"token":"120ms","api":"30ms"}`,
			check: func(t *testing.T, server *Server, _ testServer) {
				server.mu.Lock()
				defer server.mu.Unlock()
				if server.tokenLatency != 120*time.Millisecond {
					t.Errorf("token latency got %v; want 120ms", server.tokenLatency)
				}
				if server.apiLatency != 30*time.Millisecond {
					t.Errorf("API latency got %v; want 30ms", server.apiLatency)
				}
			},
		},
		{
			name: "fail token requests",
			path: "/_control/fail-token-requests",
			body: `{"count":1,"status":500,"body":"oops","content_type":"text/plain"}`,
			check: func(t *testing.T, _ *Server, ts testServer) {
				req := newRequest(t, ts.Server, http.MethodPost, tokenPath,
					"application/x-www-form-urlencoded", formBody("grant_type", "client_credentials"))
				resp := do(t, ts.Server, req)
				if resp.status != http.StatusInternalServerError {
					t.Errorf("status got %d; want 500", resp.status)
				}
				if string(resp.body) != "oops" {
					t.Errorf("body got %q; want oops", resp.body)
				}
			},
		},
		{
			name: "rate limit token requests",
			path: "/_control/rate-limit-token-requests",
			body: `{"count":1,"retry_after":"3"}`,
			check: func(t *testing.T, _ *Server, ts testServer) {
				req := newRequest(t, ts.Server, http.MethodPost, tokenPath,
					"application/x-www-form-urlencoded", formBody("grant_type", "client_credentials"))
				resp := do(t, ts.Server, req)
				if resp.status != http.StatusTooManyRequests {
					t.Errorf("status got %d; want 429 by default", resp.status)
				}
				if got := resp.header.Get("Retry-After"); got != "3" {
					t.Errorf("Retry-After got %q; want 3", got)
				}
			},
		},
		{
			name: "revoke all",
			path: "/_control/revoke-all",
			body: `{}`,
			check: func(t *testing.T, server *Server, _ testServer) {
				if got := server.ActiveTokens(); got != 0 {
					t.Errorf("ActiveTokens got %d; want 0", got)
				}
			},
		},
		{
			name: "reject all tokens",
			path: "/_control/reject-all-tokens",
			body: `{"reject":true}`,
			check: func(t *testing.T, _ *Server, ts testServer) {
				if resp := apiRequest(t, ts.Server, http.MethodGet, "/api/tasks", ts.token, ""); resp.status != http.StatusUnauthorized {
					t.Errorf("status got %d; want 401", resp.status)
				}
			},
		},
		{
			name: "client secret",
			path: "/_control/client-secret",
			body: `{"client_id":"new-client","client_secret":"new-secret"}`,
			check: func(t *testing.T, _ *Server, ts testServer) {
				req := newRequest(t, ts.Server, http.MethodPost, tokenPath,
					"application/x-www-form-urlencoded", formBody("grant_type", "client_credentials"))
				req.Header.Set("Authorization", basicAuth("new-client", "new-secret"))
				if got := do(t, ts.Server, req).status; got != http.StatusOK {
					t.Errorf("status got %d; want 200", got)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, httpServer := startServer(t, Config{EnableControl: true})
			ts := testServer{Server: httpServer, token: fetchToken(t, httpServer).AccessToken}
			resp := do(t, httpServer, newRequest(t, httpServer, http.MethodPost, tt.path, "application/json", tt.body))
			if resp.status != http.StatusNoContent {
				t.Fatalf("status got %d (%s); want 204", resp.status, resp.body)
			}
			tt.check(t, server, ts)
		})
	}
}

func TestControlRevokeToken(t *testing.T) {
	_, ts := startServer(t, Config{EnableControl: true})
	token := fetchToken(t, ts).AccessToken
	body := `{"token":"` + token + `"}`

	resp := do(t, ts, newRequest(t, ts, http.MethodPost, "/_control/revoke", "application/json", body))
	if resp.status != http.StatusNoContent {
		t.Errorf("status got %d; want 204", resp.status)
	}
	if resp := apiRequest(t, ts, http.MethodGet, "/api/tasks", token, ""); resp.status != http.StatusUnauthorized {
		t.Errorf("API status after revoke got %d; want 401", resp.status)
	}
	resp = do(t, ts, newRequest(t, ts, http.MethodPost, "/_control/revoke", "application/json", body))
	if resp.status != http.StatusNotFound {
		t.Errorf("second revoke status got %d; want 404", resp.status)
	}
}

func TestControlInvalidRequests(t *testing.T) {
	tests := []struct {
		name string
		path string
		body string
	}{
		{"lifetime not a duration", "/_control/token-lifetime", `{"lifetime":"soon"}`},
		{"lifetime negative", "/_control/token-lifetime", `{"lifetime":"-1s"}`},
		{"latency not a duration", "/_control/latency", `{"token":"fast"}`},
		{"unknown field", "/_control/latency", `{"tokn":"1s"}`},
		{"malformed body", "/_control/reject-all-tokens", `{"reject":`},
		{"failure status out of range", "/_control/fail-token-requests", `{"count":1,"status":42}`},
		{"rate limit status out of range", "/_control/rate-limit-token-requests", `{"count":1,"status":700}`},
		{"client secret missing", "/_control/client-secret", `{"client_id":"x"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ts := startServer(t, Config{EnableControl: true})
			resp := do(t, ts, newRequest(t, ts, http.MethodPost, tt.path, "application/json", tt.body))
			if resp.status != http.StatusBadRequest {
				t.Errorf("status got %d (%s); want 400", resp.status, resp.body)
			}
		})
	}
}
