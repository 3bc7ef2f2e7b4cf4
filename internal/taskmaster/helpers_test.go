package taskmaster

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testClientID     = "svc-account"
	testClientSecret = "s3cret-value"
)

// fakeClock is a manually advanced clock for Config.Now.
type fakeClock struct {
	// guards now
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// startServer starts a Server on a loopback httptest.Server. A nil
// cfg.Clients registers testClientID with testClientSecret.
func startServer(t *testing.T, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	if cfg.Clients == nil {
		cfg.Clients = map[string]string{testClientID: testClientSecret}
	}
	server := New(cfg)
	ts := httptest.NewServer(server)
	t.Cleanup(ts.Close)
	return server, ts
}

// response is a fully read HTTP response.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends req with the test server's client and reads the whole response.
func do(t *testing.T, ts *httptest.Server, req *http.Request) response {
	t.Helper()
	client := ts.Client()
	client.Timeout = 10 * time.Second
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s failed: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading response body of %s %s failed: %v", req.Method, req.URL, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}

// newRequest builds a request to path on ts, failing the test on error.
func newRequest(t *testing.T, ts *httptest.Server, method, path, contentType, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatalf("building %s %s failed: %v", method, path, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return req
}

// basicAuth returns a Basic Authorization value built as the service's guide
// does, without URL-encoding id and secret.
func basicAuth(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
}

// formBody encodes name/value pairs as application/x-www-form-urlencoded.
func formBody(pairs ...string) string {
	values := url.Values{}
	for i := 0; i+1 < len(pairs); i += 2 {
		values.Set(pairs[i], pairs[i+1])
	}
	return values.Encode()
}

// fetchToken requests a token with Basic authentication and returns the
// decoded success response.
func fetchToken(t *testing.T, ts *httptest.Server) tokenResponse {
	t.Helper()
	req := newRequest(t, ts, http.MethodPost, "/api/auth/oauth2/token",
		"application/x-www-form-urlencoded", formBody("grant_type", "client_credentials"))
	req.Header.Set("Authorization", basicAuth(testClientID, testClientSecret))
	resp := do(t, ts, req)
	if resp.status != http.StatusOK {
		t.Fatalf("token request status = %d, body %s; want 200", resp.status, resp.body)
	}
	var token tokenResponse
	decodeJSON(t, resp.body, &token)
	return token
}

// apiRequest sends an API request with the given bearer token. An empty
// token sends no Authorization header.
func apiRequest(t *testing.T, ts *httptest.Server, method, path, token, body string) response {
	t.Helper()
	contentType := ""
	if body != "" {
		contentType = "application/json"
	}
	req := newRequest(t, ts, method, path, contentType, body)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return do(t, ts, req)
}

func decodeJSON(t *testing.T, body []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("decoding %s failed: %v", body, err)
	}
}
