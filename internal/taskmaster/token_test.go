package taskmaster

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"regexp"
	"testing"
	"time"
)

const tokenPath = "/api/auth/oauth2/token"

var tokenPattern = regexp.MustCompile(`^[A-Za-z]{32}$`)

func TestTokenSuccessResponse(t *testing.T) {
	_, ts := startServer(t, Config{})
	req := newRequest(t, ts, http.MethodPost, tokenPath,
		"application/x-www-form-urlencoded", formBody("grant_type", "client_credentials"))
	req.Header.Set("Authorization", basicAuth(testClientID, testClientSecret))
	resp := do(t, ts, req)

	if resp.status != http.StatusOK {
		t.Fatalf("status = %d, body %s; want 200", resp.status, resp.body)
	}
	if got := resp.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control got %q; want no-store", got)
	}
	if got := resp.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type got %q; want application/json", got)
	}

	var fields map[string]json.RawMessage
	decodeJSON(t, resp.body, &fields)
	if got := len(fields); got != 4 {
		t.Errorf("number of fields got %d (%s); want 4", got, resp.body)
	}
	var token string
	decodeJSON(t, fields["access_token"], &token)
	if !tokenPattern.MatchString(token) {
		t.Errorf("access_token got %q; want 32 ASCII letters", token)
	}
	if got := string(fields["token_type"]); got != `"Bearer"` {
		t.Errorf("token_type got %s; want \"Bearer\"", got)
	}
	if got := string(fields["expires_in"]); got != "3600" {
		t.Errorf("expires_in got %s; want 3600", got)
	}
	if got, ok := fields["id_token"]; !ok || string(got) != "null" {
		t.Errorf("id_token got %q (present %v); want null", got, ok)
	}
}

func TestTokensAreRandom(t *testing.T) {
	_, ts := startServer(t, Config{})
	seen := map[string]bool{}
	for range 20 {
		token := fetchToken(t, ts).AccessToken
		if seen[token] {
			t.Fatalf("token %q issued twice; want a new random token per request", token)
		}
		seen[token] = true
	}
}

func TestTokenClientAuthentication(t *testing.T) {
	const colonSecret = "part1:part2"
	tests := []struct {
		name          string
		authorization string
		contentType   string
		body          string
		wantStatus    int
		wantError     string
		wantDesc      string
	}{
		{
			name:          "basic valid",
			authorization: basicAuth(testClientID, testClientSecret),
			contentType:   "application/x-www-form-urlencoded",
			body:          formBody("grant_type", "client_credentials"),
			wantStatus:    http.StatusOK,
		},
		{
			name:          "basic without padding",
			authorization: "Basic " + base64.RawStdEncoding.EncodeToString([]byte(testClientID+":"+testClientSecret)),
			contentType:   "application/x-www-form-urlencoded",
			body:          formBody("grant_type", "client_credentials"),
			wantStatus:    http.StatusOK,
		},
		{
			name:          "basic wrong secret",
			authorization: basicAuth(testClientID, "wrong"),
			contentType:   "application/x-www-form-urlencoded",
			body:          formBody("grant_type", "client_credentials"),
			wantStatus:    http.StatusBadRequest,
			wantError:     "invalid_client",
			wantDesc:      "invalid client credentials",
		},
		{
			name:          "basic unknown client",
			authorization: basicAuth("nobody", testClientSecret),
			contentType:   "application/x-www-form-urlencoded",
			body:          formBody("grant_type", "client_credentials"),
			wantStatus:    http.StatusBadRequest,
			wantError:     "invalid_client",
			wantDesc:      "invalid client credentials",
		},
		{
			// The hosted service does not URL-decode the header parts, so
			// an encoded secret is compared as sent and does not match.
			name:          "basic url-encoded secret",
			authorization: basicAuth(testClientID, "s3cret%2Dvalue"),
			contentType:   "application/x-www-form-urlencoded",
			body:          formBody("grant_type", "client_credentials"),
			wantStatus:    http.StatusBadRequest,
			wantError:     "invalid_client",
			wantDesc:      "invalid client credentials",
		},
		{
			// Three parts after the split: the header is ignored and the
			// body has no credentials.
			name:          "basic secret with colon",
			authorization: basicAuth("colon-client", colonSecret),
			contentType:   "application/x-www-form-urlencoded",
			body:          formBody("grant_type", "client_credentials"),
			wantStatus:    http.StatusUnauthorized,
			wantError:     "invalid_client",
			wantDesc:      "Client authentication required",
		},
		{
			name:          "basic secret with colon falls back to body",
			authorization: basicAuth("colon-client", colonSecret),
			contentType:   "application/x-www-form-urlencoded",
			body:          formBody("grant_type", "client_credentials", "client_id", "colon-client", "client_secret", colonSecret),
			wantStatus:    http.StatusOK,
		},
		{
			name:          "basic invalid base64",
			authorization: "Basic !!!not-base64!!!",
			contentType:   "application/x-www-form-urlencoded",
			body:          formBody("grant_type", "client_credentials"),
			wantStatus:    http.StatusBadRequest,
			wantError:     "invalid_request",
			wantDesc:      "invalid client credentials format in Authorization header",
		},
		{
			name:        "body form valid",
			contentType: "application/x-www-form-urlencoded",
			body:        formBody("grant_type", "client_credentials", "client_id", testClientID, "client_secret", testClientSecret),
			wantStatus:  http.StatusOK,
		},
		{
			name:        "body form secret with colon",
			contentType: "application/x-www-form-urlencoded",
			body:        formBody("grant_type", "client_credentials", "client_id", "colon-client", "client_secret", colonSecret),
			wantStatus:  http.StatusOK,
		},
		{
			name:        "body form wrong secret",
			contentType: "application/x-www-form-urlencoded",
			body:        formBody("grant_type", "client_credentials", "client_id", testClientID, "client_secret", "wrong"),
			wantStatus:  http.StatusBadRequest,
			wantError:   "invalid_client",
			wantDesc:    "invalid client credentials",
		},
		{
			name:        "body form secret missing",
			contentType: "application/x-www-form-urlencoded",
			body:        formBody("grant_type", "client_credentials", "client_id", testClientID),
			wantStatus:  http.StatusUnauthorized,
			wantError:   "invalid_client",
			wantDesc:    "Client authentication required",
		},
		{
			name:        "json body valid",
			contentType: "application/json",
			body:        `{"grant_type":"client_credentials","client_id":"` + testClientID + `","client_secret":"` + testClientSecret + `"}`,
			wantStatus:  http.StatusOK,
		},
		{
			name:        "json body with charset",
			contentType: "application/json; charset=utf-8",
			body:        `{"grant_type":"client_credentials","client_id":"` + testClientID + `","client_secret":"` + testClientSecret + `"}`,
			wantStatus:  http.StatusOK,
		},
		{
			name:          "json body with basic auth",
			authorization: basicAuth(testClientID, testClientSecret),
			contentType:   "application/json",
			body:          `{"grant_type":"client_credentials"}`,
			wantStatus:    http.StatusOK,
		},
		{
			name:        "json client_id not a string",
			contentType: "application/json",
			body:        `{"grant_type":"client_credentials","client_id":42,"client_secret":"x"}`,
			wantStatus:  http.StatusBadRequest,
			wantError:   "invalid_request",
			wantDesc:    "invalid client credentials format in request body",
		},
		{
			name:        "no credentials",
			contentType: "application/x-www-form-urlencoded",
			body:        formBody("grant_type", "client_credentials"),
			wantStatus:  http.StatusUnauthorized,
			wantError:   "invalid_client",
			wantDesc:    "Client authentication required",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ts := startServer(t, Config{Clients: map[string]string{
				testClientID:   testClientSecret,
				"colon-client": colonSecret,
			}})
			req := newRequest(t, ts, http.MethodPost, tokenPath, tt.contentType, tt.body)
			if tt.authorization != "" {
				req.Header.Set("Authorization", tt.authorization)
			}
			resp := do(t, ts, req)

			if resp.status != tt.wantStatus {
				t.Fatalf("status got %d (body %s); want %d", resp.status, resp.body, tt.wantStatus)
			}
			if tt.wantStatus == http.StatusOK {
				var token tokenResponse
				decodeJSON(t, resp.body, &token)
				if !tokenPattern.MatchString(token.AccessToken) {
					t.Errorf("access_token got %q; want 32 ASCII letters", token.AccessToken)
				}
				return
			}
			var oauthErr oauthError
			decodeJSON(t, resp.body, &oauthErr)
			if oauthErr.Error != tt.wantError {
				t.Errorf("error got %q; want %q", oauthErr.Error, tt.wantError)
			}
			if oauthErr.ErrorDescription != tt.wantDesc {
				t.Errorf("error_description got %q; want %q", oauthErr.ErrorDescription, tt.wantDesc)
			}
		})
	}
}

func TestTokenRequestFormat(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		body        string
		wantStatus  int
		wantError   string
	}{
		{"content type missing", "", formBody("grant_type", "client_credentials"), http.StatusBadRequest, "invalid_request"},
		{"content type text/plain", "text/plain", formBody("grant_type", "client_credentials"), http.StatusBadRequest, "invalid_request"},
		{"content type multipart", "multipart/form-data; boundary=x", "--x--", http.StatusBadRequest, "invalid_request"},
		{"json body malformed", "application/json", `{"grant_type":`, http.StatusBadRequest, "invalid_request"},
		{"json body not an object", "application/json", `["client_credentials"]`, http.StatusBadRequest, "invalid_request"},
		{"grant type password", "application/x-www-form-urlencoded", formBody("grant_type", "password"), http.StatusBadRequest, "unsupported_grant_type"},
		{"grant type authorization_code", "application/x-www-form-urlencoded", formBody("grant_type", "authorization_code"), http.StatusBadRequest, "unsupported_grant_type"},
		{"grant type missing", "application/x-www-form-urlencoded", "", http.StatusBadRequest, "unsupported_grant_type"},
		{"json grant type number", "application/json", `{"grant_type":1}`, http.StatusBadRequest, "unsupported_grant_type"},
		{"form charset accepted", "application/x-www-form-urlencoded; charset=utf-8", formBody("grant_type", "client_credentials"), http.StatusOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ts := startServer(t, Config{})
			req := newRequest(t, ts, http.MethodPost, tokenPath, tt.contentType, tt.body)
			req.Header.Set("Authorization", basicAuth(testClientID, testClientSecret))
			resp := do(t, ts, req)

			if resp.status != tt.wantStatus {
				t.Fatalf("status got %d (body %s); want %d", resp.status, resp.body, tt.wantStatus)
			}
			if tt.wantError == "" {
				return
			}
			var oauthErr oauthError
			decodeJSON(t, resp.body, &oauthErr)
			if oauthErr.Error != tt.wantError {
				t.Errorf("error got %q; want %q", oauthErr.Error, tt.wantError)
			}
			if oauthErr.ErrorDescription == "" {
				t.Errorf("error_description got empty; want a description")
			}
		})
	}
}

func TestTokenMethodNotAllowed(t *testing.T) {
	server, ts := startServer(t, Config{})
	resp := do(t, ts, newRequest(t, ts, http.MethodGet, tokenPath, "", ""))
	if resp.status != http.StatusMethodNotAllowed {
		t.Errorf("status got %d; want 405", resp.status)
	}
	if got := resp.header.Get("Allow"); got != http.MethodPost {
		t.Errorf("Allow got %q; want POST", got)
	}
	if got := server.TokenRequests(); got != 0 {
		t.Errorf("TokenRequests got %d; want 0", got)
	}
}

func TestInvalidClientStatus(t *testing.T) {
	tests := []struct {
		name       string
		configured int
		set        int // passed to SetInvalidClientStatus unless 0
		wantStatus int
	}{
		{"default is 400", 0, 0, http.StatusBadRequest},
		{"config 400", http.StatusBadRequest, 0, http.StatusBadRequest},
		{"config 401", http.StatusUnauthorized, 0, http.StatusUnauthorized},
		{"config other value means 400", http.StatusForbidden, 0, http.StatusBadRequest},
		{"knob to 401", 0, http.StatusUnauthorized, http.StatusUnauthorized},
		{"knob back to 400", http.StatusUnauthorized, http.StatusBadRequest, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, ts := startServer(t, Config{InvalidClientStatus: tt.configured})
			if tt.set != 0 {
				server.SetInvalidClientStatus(tt.set)
			}
			req := newRequest(t, ts, http.MethodPost, tokenPath,
				"application/x-www-form-urlencoded", formBody("grant_type", "client_credentials"))
			req.Header.Set("Authorization", basicAuth(testClientID, "wrong"))
			resp := do(t, ts, req)

			if resp.status != tt.wantStatus {
				t.Errorf("status got %d; want %d", resp.status, tt.wantStatus)
			}
			var oauthErr oauthError
			decodeJSON(t, resp.body, &oauthErr)
			if oauthErr.Error != "invalid_client" {
				t.Errorf("error got %q; want invalid_client", oauthErr.Error)
			}
			if oauthErr.ErrorDescription != "invalid client credentials" {
				t.Errorf("error_description got %q; want %q", oauthErr.ErrorDescription, "invalid client credentials")
			}
			wantChallenge := tt.wantStatus == http.StatusUnauthorized
			if got := resp.header.Get("WWW-Authenticate") != ""; got != wantChallenge {
				t.Errorf("WWW-Authenticate present got %v; want %v", got, wantChallenge)
			}
		})
	}
}

func TestTokenExpiryWithClock(t *testing.T) {
	clock := newFakeClock()
	_, ts := startServer(t, Config{Now: clock.Now})
	token := fetchToken(t, ts)
	if token.ExpiresIn != 3600 {
		t.Fatalf("expires_in got %d; want 3600", token.ExpiresIn)
	}

	clock.Advance(time.Hour - time.Second)
	if resp := apiRequest(t, ts, http.MethodGet, "/api/tasks", token.AccessToken, ""); resp.status != http.StatusOK {
		t.Errorf("status one second before expiry got %d; want 200", resp.status)
	}

	clock.Advance(time.Second)
	resp := apiRequest(t, ts, http.MethodGet, "/api/tasks", token.AccessToken, "")
	if resp.status != http.StatusUnauthorized {
		t.Fatalf("status at expiry got %d; want 401", resp.status)
	}
	var msg messageResponse
	decodeJSON(t, resp.body, &msg)
	if msg.Message != "Invalid or expired token" {
		t.Errorf("message got %q; want %q", msg.Message, "Invalid or expired token")
	}
	if got := resp.header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
		t.Errorf("WWW-Authenticate got %q; want %q", got, `Bearer error="invalid_token"`)
	}
}

func TestSetTokenLifetime(t *testing.T) {
	tests := []struct {
		name          string
		lifetime      time.Duration
		wantExpiresIn int64
		validBefore   time.Duration // the token is checked this long after issue
	}{
		{"whole seconds", 90 * time.Second, 90, 90*time.Second - time.Millisecond},
		{"fraction rounds down", 1500 * time.Millisecond, 1, 1499 * time.Millisecond},
		{"under one second sends 1", 500 * time.Millisecond, 1, 499 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			server, ts := startServer(t, Config{Now: clock.Now})
			server.SetTokenLifetime(tt.lifetime)
			token := fetchToken(t, ts)
			if token.ExpiresIn != tt.wantExpiresIn {
				t.Errorf("expires_in got %d; want %d", token.ExpiresIn, tt.wantExpiresIn)
			}

			clock.Advance(tt.validBefore)
			if resp := apiRequest(t, ts, http.MethodGet, "/api/tasks", token.AccessToken, ""); resp.status != http.StatusOK {
				t.Errorf("status %v after issue got %d; want 200", tt.validBefore, resp.status)
			}
			clock.Advance(tt.lifetime - tt.validBefore)
			if resp := apiRequest(t, ts, http.MethodGet, "/api/tasks", token.AccessToken, ""); resp.status != http.StatusUnauthorized {
				t.Errorf("status %v after issue got %d; want 401", tt.lifetime, resp.status)
			}
		})
	}
}

func TestSetTokenLifetimeZero(t *testing.T) {
	server, ts := startServer(t, Config{})
	server.SetTokenLifetime(0)
	token := fetchToken(t, ts)
	if token.ExpiresIn != 0 {
		t.Errorf("expires_in got %d; want 0", token.ExpiresIn)
	}
	if resp := apiRequest(t, ts, http.MethodGet, "/api/tasks", token.AccessToken, ""); resp.status != http.StatusUnauthorized {
		t.Errorf("status got %d; want 401", resp.status)
	}
}

func TestConfigTokenLifetime(t *testing.T) {
	_, ts := startServer(t, Config{TokenLifetime: 2 * time.Minute})
	if got := fetchToken(t, ts).ExpiresIn; got != 120 {
		t.Errorf("expires_in got %d; want 120", got)
	}
}

func TestRevocation(t *testing.T) {
	server, ts := startServer(t, Config{})
	first := fetchToken(t, ts).AccessToken
	second := fetchToken(t, ts).AccessToken
	third := fetchToken(t, ts).AccessToken

	if !server.RevokeToken(first) {
		t.Errorf("RevokeToken(live token) got false; want true")
	}
	if server.RevokeToken(first) {
		t.Errorf("RevokeToken(revoked token) got true; want false")
	}
	if resp := apiRequest(t, ts, http.MethodGet, "/api/tasks", first, ""); resp.status != http.StatusUnauthorized {
		t.Errorf("revoked token status got %d; want 401", resp.status)
	}
	if resp := apiRequest(t, ts, http.MethodGet, "/api/tasks", second, ""); resp.status != http.StatusOK {
		t.Errorf("other token status got %d; want 200", resp.status)
	}
	if got := server.ActiveTokens(); got != 2 {
		t.Errorf("ActiveTokens got %d; want 2", got)
	}

	server.RevokeAll()
	for _, token := range []string{second, third} {
		if resp := apiRequest(t, ts, http.MethodGet, "/api/tasks", token, ""); resp.status != http.StatusUnauthorized {
			t.Errorf("status after RevokeAll got %d; want 401", resp.status)
		}
	}
	if got := server.ActiveTokens(); got != 0 {
		t.Errorf("ActiveTokens after RevokeAll got %d; want 0", got)
	}

	fresh := fetchToken(t, ts).AccessToken
	if resp := apiRequest(t, ts, http.MethodGet, "/api/tasks", fresh, ""); resp.status != http.StatusOK {
		t.Errorf("new token after RevokeAll status got %d; want 200", resp.status)
	}
}

func TestRejectAllTokens(t *testing.T) {
	server, ts := startServer(t, Config{})
	token := fetchToken(t, ts).AccessToken

	server.RejectAllTokens(true)
	resp := apiRequest(t, ts, http.MethodGet, "/api/tasks", token, "")
	if resp.status != http.StatusUnauthorized {
		t.Errorf("status while rejecting got %d; want 401", resp.status)
	}
	if got := resp.header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
		t.Errorf("WWW-Authenticate got %q; want %q", got, `Bearer error="invalid_token"`)
	}
	fresh := fetchToken(t, ts).AccessToken
	if resp := apiRequest(t, ts, http.MethodGet, "/api/tasks", fresh, ""); resp.status != http.StatusUnauthorized {
		t.Errorf("new token status while rejecting got %d; want 401", resp.status)
	}

	server.RejectAllTokens(false)
	if resp := apiRequest(t, ts, http.MethodGet, "/api/tasks", token, ""); resp.status != http.StatusOK {
		t.Errorf("status after RejectAllTokens(false) got %d; want 200", resp.status)
	}
}

func TestExpiredTokensAreSwept(t *testing.T) {
	clock := newFakeClock()
	server, ts := startServer(t, Config{Now: clock.Now})
	server.SetTokenLifetime(time.Second)
	fetchToken(t, ts)
	clock.Advance(time.Second)

	server.mu.Lock()
	server.issuedSinceSweep = sweepInterval - 1
	server.mu.Unlock()
	fetchToken(t, ts)

	server.mu.Lock()
	stored := len(server.tokens)
	server.mu.Unlock()
	if stored != 1 {
		t.Errorf("stored tokens after sweep got %d; want 1", stored)
	}
}

func TestNewAccessTokenAlphabet(t *testing.T) {
	counts := map[byte]int{}
	for range 200 {
		token := newAccessToken()
		if !tokenPattern.MatchString(token) {
			t.Fatalf("newAccessToken got %q; want 32 ASCII letters", token)
		}
		for i := 0; i < len(token); i++ {
			counts[token[i]]++
		}
	}
	// 6400 letters drawn from 52: every letter is expected about 123 times,
	// so a missing one means a broken alphabet mapping.
	if got := len(counts); got != len(tokenAlphabet) {
		t.Errorf("distinct letters got %d; want %d", got, len(tokenAlphabet))
	}
}
