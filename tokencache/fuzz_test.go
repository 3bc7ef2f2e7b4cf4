package tokencache

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fuzzSecret is the client secret of the fuzzed token requests.
const fuzzSecret = "fuzz-secret-Zq81"

// FuzzTokenResponse sends one token request per input to a loopback token
// endpoint that responds with the fuzzed status, content type and body. A
// fetch must return a usable grant or a *FetchError, and neither the
// error text nor the grant may carry the client secret.
func FuzzTokenResponse(f *testing.F) {
	f.Add(200, "application/json", `{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}`)
	f.Add(200, "application/json", `{"access_token":"tok-1","token_type":"bearer","expires_in":"3599"}`)
	f.Add(200, "application/json", `{"access_token":"tok-1","expires_in":"soon"}`)
	f.Add(200, "application/json", `{"access_token":"tok-1","expires_in":1e400}`)
	f.Add(200, "application/json", `{"access_token":"tok-1","expires_in":-1}`)
	f.Add(200, "application/json", `{"access_token":7}`)
	f.Add(200, "application/x-www-form-urlencoded", "access_token=tok-1&token_type=bearer&expires_in=60")
	f.Add(200, "text/html", "<html>login</html>")
	f.Add(400, "application/json", `{"error":"invalid_client","error_description":"secret fuzz-secret-Zq81 is wrong"}`)
	f.Add(500, "text/plain", "Authorization: Basic "+base64.StdEncoding.EncodeToString([]byte("client:"+fuzzSecret)))
	f.Add(429, "application/json", `{}`)
	f.Add(200, "application/json", `{"access_token":"tok-1","tok`)

	var mu sync.Mutex
	var status int
	var contentType, body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		s, ct, b := status, contentType, body
		mu.Unlock()
		if ct != "" {
			w.Header().Set("Content-Type", ct)
		}
		w.WriteHeader(s)
		_, _ = w.Write([]byte(b))
	}))
	defer srv.Close()
	client := &http.Client{
		Transport:     &http.Transport{},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()
	fetcher := &ClientCredentials{
		TokenURL: srv.URL, ClientID: "client", Secret: StaticSecret(fuzzSecret), HTTPClient: client,
	}
	basic := base64.StdEncoding.EncodeToString([]byte("client:" + fuzzSecret))

	f.Fuzz(func(t *testing.T, st int, ct, b string) {
		if st < 200 || st > 599 || strings.ContainsAny(ct, "\r\n\x00") {
			t.Skip("not a status or header value a server can send")
		}
		mu.Lock()
		status, contentType, body = st, ct, b
		mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		grant, err := fetcher.Fetch(ctx)
		if err != nil {
			var fe *FetchError
			if !errors.As(err, &fe) {
				t.Fatalf("Fetch() error %T is not a *FetchError", err)
			}
			text := err.Error()
			if strings.Contains(text, fuzzSecret) || strings.Contains(text, basic) {
				t.Errorf("error text contains the client secret: %s", text)
			}
			if len(fe.Excerpt) > 203 || len(fe.Description) > 203 {
				t.Errorf("excerpt of %d or description of %d bytes; want at most 203", len(fe.Excerpt), len(fe.Description))
			}
			if fe.Label() == "" {
				t.Error("Label() is empty")
			}
			return
		}
		if grant.AccessToken == "" {
			t.Error("grant without an access token")
		}
		if grant.ExpiresIn < 0 || grant.ExpiresIn > 10*365*24*time.Hour {
			t.Errorf("ExpiresIn = %v; want 0 (unknown) up to 10 years", grant.ExpiresIn)
		}
	})
}

// FuzzSanitize checks that sanitize removes the secret, whatever
// surrounds it, and keeps to its length limit.
func FuzzSanitize(f *testing.F) {
	f.Add("error: secret s3cr3t-value rejected", "s3cr3t-value")
	f.Add(`{"access_token":"abc","refresh_token":"def"}`, "")
	f.Add("client_secret=abc%2Bdef&grant_type=client_credentials", "abc+def")
	f.Add("Authorization: Basic Y2xpZW50OnNlY3JldA==", "secret")
	f.Add("\x00\x01secret-secret\xff", "secret-secret")
	f.Add(strings.Repeat("é", 300), "")
	f.Fuzz(func(t *testing.T, s, secret string) {
		out := sanitize(s, secret, 200)
		if len(out) > 203 {
			t.Errorf("len(sanitize()) = %d; want at most 203", len(out))
		}
		// A secret that "[REDACTED]" itself contains, or that has
		// brackets, could be formed by the replacement text.
		if len(secret) < 8 || strings.ContainsAny(secret, "[]") || strings.Contains("[REDACTED]...", secret) {
			return
		}
		if strings.Contains(s, secret) && strings.Contains(out, secret) {
			t.Errorf("sanitize(%q, %q) = %q, which still contains the secret", s, secret, out)
		}
	})
}

// FuzzParseRetryAfter checks that a Retry-After value never yields a
// negative delay, and that delay-seconds are read exactly up to the 24h
// cap.
func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Add("120")
	f.Add("0")
	f.Add("-5")
	f.Add("99999999999999999999")
	f.Add("Fri, 02 Jan 2026 03:05:05 GMT")
	f.Add("Thu, 01 Jan 2026 00:00:00 GMT")
	f.Add(" 7 ")
	f.Fuzz(func(t *testing.T, v string) {
		d := parseRetryAfter(v, now)
		if d < 0 {
			t.Errorf("parseRetryAfter(%q) = %v; want at least 0", v, d)
		}
		secs, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return
		}
		want := time.Duration(min(max(secs, 0), 24*3600)) * time.Second
		if d != want {
			t.Errorf("parseRetryAfter(%q) = %v; want %v", v, d, want)
		}
	})
}

// FuzzExpiresIn feeds expires_in values of any JSON type to expiresIn,
// which must return 0 (unknown) or a lifetime of up to 10 years.
func FuzzExpiresIn(f *testing.F) {
	for _, seed := range []string{`3600`, `"3599"`, `"soon"`, `0`, `-1`, `1e300`, `null`, `true`, `[]`, `{}`, `" 60 "`, `"NaN"`, `"Inf"`, `0.0001`} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var v any
		if json.Unmarshal([]byte(raw), &v) != nil {
			return
		}
		d := expiresIn(v)
		if d < 0 || d > 10*365*24*time.Hour {
			t.Errorf("expiresIn(%s) = %v; want 0 up to 10 years", raw, d)
		}
	})
}
