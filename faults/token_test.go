package faults_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zapcore"

	"github.com/authproxy/authproxy/tokencache"
)

// checkNoTokenOutcome checks what a client sees while the sidecar has no
// token: a JSON 503 with Retry-After, nothing sent upstream, the cache not
// ready and the failure counted under code.
func checkNoTokenOutcome(t *testing.T, s *sidecar, up *upstream, r response, code string) {
	t.Helper()
	checkErrorResponse(t, r, http.StatusServiceUnavailable, "token_unavailable")
	retryAfter, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if err != nil || retryAfter < 1 {
		t.Errorf("Retry-After = %q; want a whole number of seconds, at least 1", r.Header.Get("Retry-After"))
	}
	if n := len(up.received()); n != 0 {
		t.Errorf("upstream received %d requests; want 0", n)
	}
	if s.Cache.Ready() {
		t.Error("Cache.Ready() = true; want false")
	}
	if v := testutil.ToFloat64(s.Metrics.TokenValid); v != 0 {
		t.Errorf("authproxy_token_valid = %v; want 0", v)
	}
	// The refresh loop may count its failure after the client's 503.
	awaitTrue(t, 2*time.Second, fmt.Sprintf(`authproxy_token_fetches_total{outcome="failure",error_code=%q} is at least 1`, code), func() bool {
		return s.fetches("failure", code) >= 1
	})
	if v := s.fetches("success", ""); v != 0 {
		t.Errorf(`authproxy_token_fetches_total{outcome="success"} = %v; want 0`, v)
	}
	awaitTrue(t, 5*time.Second, `authproxy_requests_total{method="get",code="503"} counts the request`, func() bool {
		return s.requests("get", "503") >= 1
	})
}

func TestTokenEndpointConnectionRefused(t *testing.T) {
	watch := newLeakWatch()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	up := newUpstream(t)
	s := startSidecar(t, config{tokenURL: "http://" + addr + "/token", upstream: up.URL}, watch)
	client := newClient(t)

	r := get(t, client, s.URL+"/api/tasks")
	checkNoTokenOutcome(t, s, up, r, tokencache.KindNetwork)
	s.checkLogged(t, zapcore.ErrorLevel, "token request failed and no valid token is held")

	// The token endpoint comes up on the same port; the sidecar recovers
	// by itself.
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	endpoint := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := "tok-" + randomHex(12)
		watch.add(token)
		writeToken(w, token, "Bearer", 3600)
	}))
	endpoint.Listener.Close()
	endpoint.Listener = ln
	endpoint.Start()
	t.Cleanup(endpoint.Close)
	s.checkServes(t, client)
}

func TestTokenEndpointNeverAnswers(t *testing.T) {
	watch := newLeakWatch()
	endpoint := newTokenEndpoint(t, watch)
	endpoint.setResponder(func(w http.ResponseWriter, r *http.Request, token string) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	up := newUpstream(t)
	const tokenTimeout = 300 * time.Millisecond
	s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL, tokenTimeout: tokenTimeout}, watch)
	client := newClient(t)

	const clients = 5
	type outcome struct {
		r    response
		took time.Duration
	}
	results := make(chan outcome, clients)
	for range clients {
		go func() {
			start := time.Now()
			resp, err := client.Get(s.URL + "/api/tasks")
			if err != nil {
				results <- outcome{r: response{Status: -1, Body: []byte(err.Error())}, took: time.Since(start)}
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- outcome{r: response{Status: resp.StatusCode, Header: resp.Header, Body: body}, took: time.Since(start)}
		}()
	}
	for range clients {
		o := <-results
		if o.took > tokenTimeout+time.Second {
			t.Errorf("a client waited %v; want at most TOKEN_TIMEOUT (%v) plus 1s", o.took, tokenTimeout)
		}
		checkNoTokenOutcome(t, s, up, o.r, tokencache.KindTimeout)
	}
	s.checkLogged(t, zapcore.ErrorLevel, "token request failed and no valid token is held")

	endpoint.setResponder(func(w http.ResponseWriter, r *http.Request, token string) {
		writeToken(w, token, "Bearer", 3600)
	})
	s.checkServes(t, client)
}

func TestTokenEndpointErrorStatus(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		contentType string
		body        string
	}{
		{"500 text", http.StatusInternalServerError, "text/plain", "internal error"},
		{"502 html", http.StatusBadGateway, "text/html", "<html><body>Bad Gateway</body></html>"},
		{"404 empty", http.StatusNotFound, "", ""},
		{"302 redirect", http.StatusFound, "text/html", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			watch := newLeakWatch()
			endpoint := newTokenEndpoint(t, watch)
			redirected := atomic.Int32{}
			target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				redirected.Add(1)
			}))
			t.Cleanup(target.Close)
			endpoint.setResponder(func(w http.ResponseWriter, r *http.Request, token string) {
				if tt.status == http.StatusFound {
					w.Header().Set("Location", target.URL+"/steal")
				}
				if tt.contentType != "" {
					w.Header().Set("Content-Type", tt.contentType)
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})
			up := newUpstream(t)
			s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL}, watch)
			client := newClient(t)

			r := get(t, client, s.URL+"/api/tasks")
			checkNoTokenOutcome(t, s, up, r, tokencache.KindHTTPStatus)
			s.checkLogged(t, zapcore.ErrorLevel, "token request failed and no valid token is held")
			if st := s.Cache.Status(); !strings.Contains(st.LastError, "HTTP status "+strconv.Itoa(tt.status)) {
				t.Errorf("Status().LastError = %q; want it to name HTTP status %d", st.LastError, tt.status)
			}
			if n := redirected.Load(); n != 0 {
				t.Errorf("the redirect target received %d requests; want 0, the credentials must not follow a redirect", n)
			}

			endpoint.setResponder(func(w http.ResponseWriter, r *http.Request, token string) {
				writeToken(w, token, "Bearer", 3600)
			})
			s.checkServes(t, client)
		})
	}
}

// TestTokenEndpointEchoesCredentials sends a 500 page that repeats
// the whole token request, credentials included, as some misconfigured
// gateways do. The leak check of startSidecar then proves that neither
// the logs, /metrics nor the cache status repeat them.
func TestTokenEndpointEchoesCredentials(t *testing.T) {
	for _, method := range []tokencache.AuthMethod{tokencache.ClientSecretBasic, tokencache.ClientSecretPost} {
		t.Run(string(method), func(t *testing.T) {
			watch := newLeakWatch()
			endpoint := newTokenEndpoint(t, watch)
			endpoint.setResponder(func(w http.ResponseWriter, r *http.Request, token string) {
				dump, _ := httputil.DumpRequest(r, true)
				w.Header().Set("Content-Type", "text/html")
				w.WriteHeader(http.StatusInternalServerError)
				fmt.Fprintf(w, "<html><pre>request was:\n%s\n</pre></html>", dump)
			})
			up := newUpstream(t)
			s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL, method: method}, watch)
			client := newClient(t)

			r := get(t, client, s.URL+"/api/tasks")
			checkNoTokenOutcome(t, s, up, r, tokencache.KindHTTPStatus)
			status := fmt.Sprintf("%+v", s.Cache.Status())
			for _, secret := range watch.values() {
				if strings.Contains(status, secret) {
					t.Errorf("Cache.Status() contains the secret value %q: %s", secret, status)
				}
			}
			if body := string(r.Body); strings.Contains(body, testSecret) {
				t.Errorf("the client's 503 body contains the secret: %s", body)
			}
		})
	}
}

func TestTokenEndpointRetryAfter(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		retryAfter func() string
		// minGap is the least time the next token request must wait.
		minGap time.Duration
	}{
		{"503 seconds", http.StatusServiceUnavailable, func() string { return "2" }, 2 * time.Second},
		{"429 seconds", http.StatusTooManyRequests, func() string { return "2" }, 2 * time.Second},
		{"429 http date", http.StatusTooManyRequests, func() string {
			return time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat)
		}, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			watch := newLeakWatch()
			endpoint := newTokenEndpoint(t, watch)
			var answered atomic.Int32
			endpoint.setResponder(func(w http.ResponseWriter, r *http.Request, token string) {
				if answered.Add(1) == 1 {
					w.Header().Set("Retry-After", tt.retryAfter())
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(tt.status)
					_, _ = io.WriteString(w, `{"message":"slow down"}`)
					return
				}
				writeToken(w, token, "Bearer", 3600)
			})
			up := newUpstream(t)
			s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL}, watch)
			client := newClient(t)

			r := get(t, client, s.URL+"/api/tasks")
			checkNoTokenOutcome(t, s, up, r, tokencache.KindHTTPStatus)
			if got := r.Header.Get("Retry-After"); got != "2" && got != "3" && got != "1" {
				t.Errorf("Retry-After to the client = %q; want the server's remaining delay, 1 to 3 seconds", got)
			}
			s.checkLogged(t, zapcore.ErrorLevel, "token request failed and no valid token is held")

			awaitTrue(t, 10*time.Second, "a second token request arrives", func() bool { return endpoint.count() >= 2 })
			arrivals := endpoint.arrivalTimes()
			if gap := arrivals[1].Sub(arrivals[0]); gap < tt.minGap {
				t.Errorf("second token request came %v after the first; want at least %v (Retry-After)", gap, tt.minGap)
			}
			s.checkServes(t, client)
		})
	}
}

func TestTokenEndpointBadSuccessBody(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		body        func(token string) string
		code        string
	}{
		{"html", "text/html; charset=utf-8", func(string) string {
			return "<!doctype html><html><body>Sign in</body></html>"
		}, tokencache.KindBadResponse},
		{"empty json", "application/json", func(string) string { return "" }, tokencache.KindBadResponse},
		{"empty text", "text/plain", func(string) string { return "" }, tokencache.KindBadResponse},
		{"error field", "application/json", func(string) string {
			return `{"error":"invalid_scope","error_description":"scope tasks:write is not allowed"}`
		}, "invalid_scope"},
		{"truncated json", "application/json", func(token string) string {
			return `{"access_token":"` + token + `","token_type":"Bearer","expi`
		}, tokencache.KindBadResponse},
		{"no access_token", "application/json", func(string) string {
			return `{"token_type":"Bearer","expires_in":3600}`
		}, tokencache.KindBadResponse},
		{"token with space", "application/json", func(token string) string {
			return `{"access_token":"` + token + ` x","token_type":"Bearer","expires_in":3600}`
		}, tokencache.KindBadResponse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			watch := newLeakWatch()
			endpoint := newTokenEndpoint(t, watch)
			endpoint.setResponder(func(w http.ResponseWriter, r *http.Request, token string) {
				w.Header().Set("Content-Type", tt.contentType)
				_, _ = io.WriteString(w, tt.body(token))
			})
			up := newUpstream(t)
			s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL}, watch)
			client := newClient(t)

			r := get(t, client, s.URL+"/api/tasks")
			checkNoTokenOutcome(t, s, up, r, tt.code)
			s.checkLogged(t, zapcore.ErrorLevel, "token request failed and no valid token is held")

			endpoint.setResponder(func(w http.ResponseWriter, r *http.Request, token string) {
				writeToken(w, token, "Bearer", 3600)
			})
			s.checkServes(t, client)
		})
	}
}

// TestTokenEndpointHugeBody sends a 64 MiB token response. The sidecar
// must read at most about 1 MiB of it (the cap of golang.org/x/oauth2),
// fail the fetch and go on serving.
func TestTokenEndpointHugeBody(t *testing.T) {
	watch := newLeakWatch()
	endpoint := newTokenEndpoint(t, watch)
	const total = 64 << 20
	var written atomic.Int64
	endpoint.setResponder(func(w http.ResponseWriter, r *http.Request, token string) {
		w.Header().Set("Content-Type", "application/json")
		n, err := io.WriteString(w, `{"access_token":"`+token+`","token_type":"Bearer","expires_in":3600,"padding":"`)
		written.Add(int64(n))
		chunk := strings.Repeat("a", 64<<10)
		for written.Load() < total && err == nil {
			n, err = io.WriteString(w, chunk)
			written.Add(int64(n))
		}
		if err == nil {
			_, _ = io.WriteString(w, `"}`)
		}
	})
	up := newUpstream(t)
	s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL}, watch)
	client := newClient(t)

	start := time.Now()
	r := get(t, client, s.URL+"/api/tasks")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the client waited %v; want under 5s", took)
	}
	checkNoTokenOutcome(t, s, up, r, tokencache.KindBadResponse)
	// Socket buffers on loopback hold a few MiB, so the server gets that
	// much more out than the sidecar reads.
	if n := written.Load(); n >= 16<<20 {
		t.Errorf("the token endpoint wrote %d bytes of one response; want under 16 MiB, because the sidecar stops reading at 1 MiB", n)
	}

	endpoint.setResponder(func(w http.ResponseWriter, r *http.Request, token string) {
		writeToken(w, token, "Bearer", 3600)
	})
	s.checkServes(t, client)
}

func TestTokenEndpointInvalidClient(t *testing.T) {
	watch := newLeakWatch()
	const wrongSecret = "wrong-secret-0451"
	watch.add(wrongSecret)
	watch.addBasic(testClientID, wrongSecret)
	path := filepath.Join(t.TempDir(), "client-secret")
	if err := os.WriteFile(path, []byte(wrongSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secretFile, err := tokencache.NewSecretFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	endpoint := newTokenEndpoint(t, watch)
	endpoint.setResponder(func(w http.ResponseWriter, r *http.Request, token string) {
		if _, secret, _ := r.BasicAuth(); secret != testSecret && secret != "s3cr3t%2B%2Ffault%3Dvalue" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"invalid_client","error_description":"client authentication failed"}`)
			return
		}
		writeToken(w, token, "Bearer", 3600)
	})
	var reloads atomic.Int32
	up := newUpstream(t)
	const retryMin = 100 * time.Millisecond
	s := startSidecar(t, config{
		tokenURL: endpoint.URL, upstream: up.URL, secret: secretFile,
		retryMin: retryMin, retryMax: 2 * time.Second,
		onCredentialError: func() {
			reloads.Add(1)
			_, _ = secretFile.Reload()
		},
	}, watch)
	client := newClient(t)

	awaitTrue(t, 5*time.Second, "two token requests arrive", func() bool { return endpoint.count() >= 2 })
	arrivals := endpoint.arrivalTimes()
	// An ordinary failure waits RetryMin times a jitter in [0.5, 1); a
	// rejected credential waits eight times as long.
	if gap := arrivals[1].Sub(arrivals[0]); gap < 4*retryMin {
		t.Errorf("retry after invalid_client came after %v; want at least %v", gap, 4*retryMin)
	}
	r := get(t, client, s.URL+"/api/tasks")
	checkNoTokenOutcome(t, s, up, r, "invalid_client")
	s.checkLogged(t, zapcore.ErrorLevel, "token endpoint rejected the client credentials")
	if n := reloads.Load(); n < 1 {
		t.Errorf("OnCredentialError ran %d times; want at least 1", n)
	}
	if st := s.Cache.Status(); st.LastErrorCode != "invalid_client" {
		t.Errorf("Status().LastErrorCode = %q; want invalid_client", st.LastErrorCode)
	}

	// The secret is rotated in the file; the next request uses it.
	if err := os.WriteFile(path, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.checkServes(t, client)
	last := endpoint.count() - 1
	if got := endpoint.secretOf(last); got != testSecret && got != "s3cr3t%2B%2Ffault%3Dvalue" {
		t.Errorf("the successful token request carried another secret; want the one now in the file")
	}
}

func TestTokenTypeVariants(t *testing.T) {
	tests := []struct {
		name      string
		tokenType string
		warned    bool
	}{
		{"lower case", "bearer", false},
		{"upper case", "BEARER", false},
		{"canonical", "Bearer", false},
		{"missing", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			watch := newLeakWatch()
			endpoint := newTokenEndpoint(t, watch)
			endpoint.setResponder(func(w http.ResponseWriter, r *http.Request, token string) {
				writeToken(w, token, tt.tokenType, 3600)
			})
			up := newUpstream(t)
			s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL}, watch)
			client := newClient(t)

			r := get(t, client, s.URL+"/api/tasks")
			if r.Status != http.StatusOK {
				t.Fatalf("status = %d; want 200 (body %q)", r.Status, r.Body)
			}
			got := up.received()
			if len(got) != 1 {
				t.Fatalf("upstream received %d requests; want 1", len(got))
			}
			want := "Bearer " + endpoint.token(0)
			if n := len(got[0].Authorization); n != 1 {
				t.Fatalf("upstream received %d Authorization values; want 1", n)
			}
			if got[0].Authorization[0] != want {
				t.Errorf("upstream Authorization is not %q with the issued token", "Bearer <token>")
			}
			if tt.warned {
				s.checkLogged(t, zapcore.WarnLevel, "token response has no token_type")
			} else {
				s.checkNoLogAbove(t, zapcore.InfoLevel)
			}
		})
	}
	t.Run("mac", func(t *testing.T) {
		watch := newLeakWatch()
		endpoint := newTokenEndpoint(t, watch)
		endpoint.setResponder(func(w http.ResponseWriter, r *http.Request, token string) {
			writeToken(w, token, "mac", 3600)
		})
		up := newUpstream(t)
		s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL}, watch)
		client := newClient(t)

		r := get(t, client, s.URL+"/api/tasks")
		checkNoTokenOutcome(t, s, up, r, tokencache.KindBadResponse)
		if st := s.Cache.Status(); !strings.Contains(st.LastError, `unsupported token_type "mac"`) {
			t.Errorf("Status().LastError = %q; want it to name token_type mac", st.LastError)
		}
		endpoint.setResponder(func(w http.ResponseWriter, r *http.Request, token string) {
			writeToken(w, token, "Bearer", 3600)
		})
		s.checkServes(t, client)
	})
}

func TestExpiresInVariants(t *testing.T) {
	const defaultLifetime = 5 * time.Minute
	tests := []struct {
		name      string
		field     string
		lifetime  time.Duration
		defaulted bool
	}{
		{"number", `,"expires_in":3599`, 3599 * time.Second, false},
		{"numeric string", `,"expires_in":"3599"`, 3599 * time.Second, false},
		{"word", `,"expires_in":"soon"`, defaultLifetime, true},
		{"missing", ``, defaultLifetime, true},
		{"zero", `,"expires_in":0`, defaultLifetime, true},
		{"negative", `,"expires_in":-30`, defaultLifetime, true},
		{"fraction", `,"expires_in":3599.5`, 3599500 * time.Millisecond, false},
		{"null", `,"expires_in":null`, defaultLifetime, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			watch := newLeakWatch()
			endpoint := newTokenEndpoint(t, watch)
			endpoint.setResponder(func(w http.ResponseWriter, r *http.Request, token string) {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer"%s}`, token, tt.field)
			})
			up := newUpstream(t)
			s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL, defaultLifetime: defaultLifetime}, watch)
			client := newClient(t)

			for i := range 20 {
				if r := get(t, client, s.URL+"/api/tasks"); r.Status != http.StatusOK {
					t.Fatalf("request %d: status = %d; want 200 (body %q)", i, r.Status, r.Body)
				}
			}
			if n := endpoint.count(); n != 1 {
				t.Errorf("token requests = %d for 20 proxied requests; want 1", n)
			}
			st := s.Cache.Status()
			if st.Obtained == nil || st.Expiry == nil {
				t.Fatalf("Status() has no token times: %+v", st)
			}
			if got := st.Expiry.Sub(*st.Obtained); got != tt.lifetime {
				t.Errorf("lifetime = %v; want %v", got, tt.lifetime)
			}
			if st.LifetimeDefaulted != tt.defaulted {
				t.Errorf("LifetimeDefaulted = %v; want %v", st.LifetimeDefaulted, tt.defaulted)
			}
			expiry := testutil.ToFloat64(s.Metrics.TokenExpiry)
			obtained := testutil.ToFloat64(s.Metrics.TokenObtained)
			if got := time.Duration((expiry - obtained) * float64(time.Second)); (got - tt.lifetime).Abs() > time.Millisecond {
				t.Errorf("token_expiry_timestamp_seconds - token_obtained_timestamp_seconds = %v; want %v", got, tt.lifetime)
			}
		})
	}
}
