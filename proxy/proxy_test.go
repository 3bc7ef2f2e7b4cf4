package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/authproxy/authproxy/internal/taskmaster"
	"github.com/authproxy/authproxy/metrics"
	"github.com/authproxy/authproxy/proxy"
	"github.com/authproxy/authproxy/tokencache"
)

const (
	clientID     = "app-1"
	clientSecret = "s3cret:value/with%odd+chars"
)

// sidecar is a proxy wired as main wires it, in front of a real upstream.
type sidecar struct {
	url     string
	cache   *tokencache.Cache
	metrics *metrics.Metrics
	reg     *prometheus.Registry
	logs    *observer.ObservedLogs
}

type options struct {
	tokenURL string
	upstream string
	edit     func(*tokencache.Config)
	maxBody  int64
}

// startSidecar builds the token cache, metrics and proxy and serves the
// proxy on a loopback httptest server.
func startSidecar(t *testing.T, o options) *sidecar {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "test")
	cfg := tokencache.Config{
		Fetcher: &tokencache.ClientCredentials{
			TokenURL: o.tokenURL,
			ClientID: clientID,
			Secret:   tokencache.StaticSecret(clientSecret),
			Method:   tokencache.ClientSecretPost,
		},
		Timeout:               2 * time.Second,
		RefreshMinMargin:      300 * time.Millisecond,
		ExpiryLeeway:          100 * time.Millisecond,
		RetryMin:              50 * time.Millisecond,
		RetryMax:              200 * time.Millisecond,
		ForcedRefreshInterval: 200 * time.Millisecond,
		Logger:                log,
		Observer:              m,
	}
	if o.edit != nil {
		o.edit(&cfg)
	}
	cache, err := tokencache.New(cfg)
	if err != nil {
		t.Fatalf("tokencache.New() error = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { cache.Run(ctx) })

	transport, err := proxy.NewTransport(proxy.TransportConfig{ResponseHeaderTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	upstream, _ := url.Parse(o.upstream)
	p, err := proxy.New(proxy.Config{
		Upstream:      upstream,
		Tokens:        cache,
		Transport:     transport,
		MaxReplayBody: o.maxBody,
		Logger:        log,
		Metrics:       m,
	})
	if err != nil {
		t.Fatalf("proxy.New() error = %v", err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(func() {
		srv.Close()
		cancel()
		wg.Wait()
		cache.Close()
		transport.CloseIdleConnections()
	})
	return &sidecar{url: srv.URL, cache: cache, metrics: m, reg: reg, logs: logs}
}

// startTaskmaster runs a local Taskmaster that is both token endpoint and
// upstream.
func startTaskmaster(t *testing.T, lifetime time.Duration) (*taskmaster.Server, *httptest.Server) {
	t.Helper()
	tm := taskmaster.New(taskmaster.Config{
		Clients:       map[string]string{clientID: clientSecret},
		TokenLifetime: lifetime,
		RecordLimit:   10000,
	})
	srv := httptest.NewServer(tm)
	t.Cleanup(srv.Close)
	return tm, srv
}

func tokenURL(srv *httptest.Server) string { return srv.URL + "/api/auth/oauth2/token" }

func get(t *testing.T, u string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, body
}

func waitReady(t *testing.T, c *tokencache.Cache) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !c.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("no token after 5s; status %+v", c.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProxy_InjectsBearerAndReplacesInboundAuthorization(t *testing.T) {
	tm, srv := startTaskmaster(t, time.Hour)
	sc := startSidecar(t, options{tokenURL: tokenURL(srv), upstream: srv.URL})

	resp, body := get(t, sc.url+"/api/tasks", http.Header{
		"Authorization": {"Bearer client-own", "Basic Zm9vOmJhcg=="},
		// A client naming Authorization as hop-by-hop must not strip the
		// injected header.
		"Connection": {"Authorization"},
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d; want 200; body %s", resp.StatusCode, body)
	}
	var tasks []map[string]any
	if err := json.Unmarshal(body, &tasks); err != nil || len(tasks) == 0 {
		t.Fatalf("body = %s; want a non-empty JSON array of tasks", body)
	}
	reqs := tm.RecentAPIRequests()
	if len(reqs) != 1 {
		t.Fatalf("upstream saw %d requests; want 1", len(reqs))
	}
	auth := reqs[0].Authorization
	if len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") || len(auth[0]) != len("Bearer ")+32 {
		t.Errorf("upstream Authorization = %q; want exactly one Bearer token", auth)
	}
	if host := strings.TrimPrefix(srv.URL, "http://"); reqs[0].Host != host {
		t.Errorf("upstream Host = %q; want %q", reqs[0].Host, host)
	}
}

func TestProxy_JoinsBasePathAndKeepsEscapes(t *testing.T) {
	tm, srv := startTaskmaster(t, time.Hour)
	var got atomic.Pointer[http.Request]
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r)
	}))
	t.Cleanup(upstream.Close)
	_ = tm
	sc := startSidecar(t, options{tokenURL: tokenURL(srv), upstream: upstream.URL + "/base"})

	tests := []struct {
		target  string
		wantURI string
	}{
		{"/a%2Fb/c?q=1&r=%20x", "/base/a%2Fb/c?q=1&r=%20x"},
		{"/", "/base/"},
		{"/x/../y", "/base/x/../y"},
		{"//double", "/base//double"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			resp, err := sendRaw(t, sc.url, "GET "+tt.target+" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(resp, "HTTP/1.1 200") {
				t.Fatalf("response = %q; want 200, never a redirect", firstLine(resp))
			}
			if r := got.Load(); r == nil || r.RequestURI != tt.wantURI {
				t.Errorf("upstream RequestURI = %q; want %q", r.RequestURI, tt.wantURI)
			}
		})
	}
}

func TestProxy_ReplaysAfterRevocation(t *testing.T) {
	tm, srv := startTaskmaster(t, time.Hour)
	sc := startSidecar(t, options{tokenURL: tokenURL(srv), upstream: srv.URL})
	if resp, _ := get(t, sc.url+"/api/tasks", nil); resp.StatusCode != 200 {
		t.Fatalf("first GET status = %d; want 200", resp.StatusCode)
	}
	tm.RevokeAll()
	before := tm.TokenRequests()

	resp, body := get(t, sc.url+"/api/tasks", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET after revocation status = %d; want 200 after a transparent replay; body %s", resp.StatusCode, body)
	}
	if got := tm.TokenRequests() - before; got != 1 {
		t.Errorf("token requests after revocation = %d; want 1", got)
	}

	tm.RevokeAll()
	time.Sleep(250 * time.Millisecond) // past the forced refresh interval
	payload := `{"title":"written through the sidecar","description":"replayed after a 401","project_id":"` + taskmaster.SeedProjectID + `"}`
	resp, err := http.Post(sc.url+"/api/tasks", "application/json", strings.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	created, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST after revocation status = %d; want 201; body %s", resp.StatusCode, created)
	}
	if !bytes.Contains(created, []byte("replayed after a 401")) {
		t.Errorf("created task = %s; want the body sent by the client", created)
	}
	if got := testutil.ToFloat64(sc.metrics.Replays.WithLabelValues("replayed")); got != 2 {
		t.Errorf("replays_total{result=replayed} = %v; want 2", got)
	}
	if got := testutil.ToFloat64(sc.metrics.ForcedRefreshes.WithLabelValues("refreshed")); got != 2 {
		t.Errorf("token_forced_refreshes_total{result=refreshed} = %v; want 2", got)
	}
}

func TestProxy_ConcurrentUnauthorizedCauseOneRefetch(t *testing.T) {
	tm, srv := startTaskmaster(t, time.Hour)
	sc := startSidecar(t, options{tokenURL: tokenURL(srv), upstream: srv.URL})
	waitReady(t, sc.cache)
	tm.RevokeAll()
	before := tm.TokenRequests()

	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 20 {
		wg.Go(func() {
			resp, err := http.Get(sc.url + "/api/tasks")
			if err != nil || resp.StatusCode != http.StatusOK {
				failed.Add(1)
			}
			if resp != nil {
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of 20 requests failed after revocation; want 0", n)
	}
	if got := tm.TokenRequests() - before; got != 1 {
		t.Errorf("token requests after 20 concurrent 401s = %d; want 1", got)
	}
}

func TestProxy_UnreplayableBodyReturns401(t *testing.T) {
	for _, maxBody := range []int64{16, -1} {
		t.Run(fmt.Sprintf("max body %d", maxBody), func(t *testing.T) {
			testUnreplayableBody(t, maxBody)
		})
	}
}

func testUnreplayableBody(t *testing.T, maxBody int64) {
	tm, srv := startTaskmaster(t, time.Hour)
	sc := startSidecar(t, options{tokenURL: tokenURL(srv), upstream: srv.URL, maxBody: maxBody})
	waitReady(t, sc.cache)
	tm.RevokeAll()
	payload := `{"title":"too long to buffer","description":"x","project_id":"` + taskmaster.SeedProjectID + `"}`
	resp, err := http.Post(sc.url+"/api/tasks", "application/json", strings.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("status = %d; want the upstream's 401 for a body over MaxReplayBody", resp.StatusCode)
	}
	if got := testutil.ToFloat64(sc.metrics.Replays.WithLabelValues("not_replayable")); got != 1 {
		t.Errorf("replays_total{result=not_replayable} = %v; want 1", got)
	}
	// The rejected token was replaced, so the next request succeeds.
	if resp, _ := get(t, sc.url+"/api/tasks", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("next GET status = %d; want 200 with the new token", resp.StatusCode)
	}
}

func TestProxy_TokenEndpointDownGives503ThenRecovers(t *testing.T) {
	tm, srv := startTaskmaster(t, time.Hour)
	tm.FailTokenRequests(3, 503, "<html>maintenance</html>", "text/html")
	sc := startSidecar(t, options{tokenURL: tokenURL(srv), upstream: srv.URL, edit: func(c *tokencache.Config) {
		c.RetryMin, c.RetryMax = 300*time.Millisecond, 300*time.Millisecond
	}})
	resp, body := get(t, sc.url+"/api/tasks", nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status = %d; want 503 while the token endpoint is down", resp.StatusCode)
	}
	if ra := resp.Header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Errorf("Retry-After = %q; want a positive number of seconds", ra)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q; want application/json", ct)
	}
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error != "token_unavailable" || e.Description == "" {
		t.Errorf("body = %s; want {\"error\":\"token_unavailable\",\"error_description\":...}", body)
	}
	if n := tm.APIRequests(); n != 0 {
		t.Errorf("upstream got %d requests without a token; want 0", n)
	}
	waitReady(t, sc.cache)
	if resp, _ := get(t, sc.url+"/api/tasks", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("status after recovery = %d; want 200", resp.StatusCode)
	}
}

func TestProxy_ContinuousTrafficAcrossShortLifetimes(t *testing.T) {
	tm, srv := startTaskmaster(t, time.Second)
	sc := startSidecar(t, options{tokenURL: tokenURL(srv), upstream: srv.URL})
	waitReady(t, sc.cache)

	var ok, bad atomic.Int64
	var slowest atomic.Int64
	deadline := time.Now().Add(4 * time.Second)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				began := time.Now()
				resp, err := http.Get(sc.url + "/api/tasks")
				if err != nil {
					bad.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					bad.Add(1)
					t.Errorf("status %d during continuous traffic", resp.StatusCode)
					continue
				}
				ok.Add(1)
				if d := int64(time.Since(began)); d > slowest.Load() {
					slowest.Store(d)
				}
			}
		})
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Errorf("%d requests failed across 4 token lifetimes; want 0", bad.Load())
	}
	if ok.Load() < 100 {
		t.Errorf("only %d requests succeeded in 4s; want at least 100", ok.Load())
	}
	if got := tm.TokenRequests(); got < 4 || got > 12 {
		t.Errorf("token requests = %d over 4 lifetimes; want 4 to 12, one per refresh", got)
	}
	if got := testutil.ToFloat64(sc.metrics.ForcedRefreshes.WithLabelValues("refreshed")); got != 0 {
		t.Errorf("forced refreshes = %v; want 0, since no token should expire in use", got)
	}
	t.Logf("%d requests, slowest %v, %d token requests", ok.Load(), time.Duration(slowest.Load()), tm.TokenRequests())
}

func TestProxy_SecretAndTokenNeverLoggedOrExported(t *testing.T) {
	tm, srv := startTaskmaster(t, time.Second)
	sc := startSidecar(t, options{tokenURL: tokenURL(srv), upstream: srv.URL})
	waitReady(t, sc.cache)
	for range 5 {
		get(t, sc.url+"/api/tasks", http.Header{"Authorization": {"Bearer client-own-credential"}})
	}
	tm.RevokeAll()
	get(t, sc.url+"/api/tasks", nil)
	tm.FailTokenRequests(2, 500, `{"echo":"`+clientSecret+`"}`, "application/json")
	time.Sleep(1500 * time.Millisecond) // one failed refresh, then recovery
	get(t, sc.url+"/api/tasks", nil)

	secrets := []string{clientSecret, url.QueryEscape(clientSecret), "client-own-credential"}
	for _, r := range tm.RecentAPIRequests() {
		for _, a := range r.Authorization {
			secrets = append(secrets, strings.TrimPrefix(a, "Bearer "))
		}
	}
	if len(secrets) < 5 {
		t.Fatalf("collected %d values to look for; want the secret and several tokens", len(secrets))
	}
	rec := httptest.NewRecorder()
	promhandler(sc.reg).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	exported := rec.Body.String()
	var logged strings.Builder
	for _, e := range sc.logs.All() {
		logged.WriteString(e.Message)
		b, _ := json.Marshal(e.ContextMap())
		logged.Write(b)
		logged.WriteByte('\n')
	}
	for _, s := range secrets {
		if strings.Contains(exported, s) {
			t.Errorf("/metrics contains a secret or token")
		}
		if strings.Contains(logged.String(), s) {
			t.Errorf("logs contain a secret or token: %.40q...", s)
		}
	}
	if sc.logs.Len() == 0 {
		t.Error("no log lines captured; the check above proves nothing")
	}
}

// sendRaw writes a raw HTTP/1.1 request and returns the raw response.
func sendRaw(t *testing.T, base, request string) (string, error) {
	t.Helper()
	u, _ := url.Parse(base)
	conn, err := (&netDialer).Dial("tcp", u.Host)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		return "", err
	}
	b, err := io.ReadAll(conn)
	return string(b), err
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

func TestProxy_MalformedClientBodyIsClientError(t *testing.T) {
	_, srv := startTaskmaster(t, time.Hour)
	sc := startSidecar(t, options{tokenURL: tokenURL(srv), upstream: srv.URL})
	waitReady(t, sc.cache)
	resp, err := sendRaw(t, sc.url, "POST /api/tasks HTTP/1.1\r\nHost: localhost\r\n"+
		"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"+
		"zz\r\nnot a chunk\r\n0\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp, "HTTP/1.1 400") {
		t.Errorf("response = %q; want 400 for a malformed chunked body", firstLine(resp))
	}
	if !strings.Contains(resp, `"error":"invalid_request"`) {
		t.Errorf("response body lacks invalid_request: %q", resp)
	}
	for _, kind := range []string{metrics.UpstreamUnreachable, metrics.UpstreamTimeout, metrics.UpstreamOther} {
		if got := testutil.ToFloat64(sc.metrics.UpstreamErrors.WithLabelValues(kind)); got != 0 {
			t.Errorf("upstream_errors_total{kind=%q} = %v; want 0 for a client's mistake", kind, got)
		}
	}
}

func TestProxy_PassesEncodingThrough(t *testing.T) {
	_, srv := startTaskmaster(t, time.Hour)
	var acceptEncoding atomic.Pointer[string]
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ae := r.Header.Get("Accept-Encoding")
		acceptEncoding.Store(&ae)
		_, _ = io.WriteString(w, "plain")
	}))
	t.Cleanup(upstream.Close)
	sc := startSidecar(t, options{tokenURL: tokenURL(srv), upstream: upstream.URL})
	resp, err := sendRaw(t, sc.url, "GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp, "HTTP/1.1 200") {
		t.Fatalf("response = %q; want 200", firstLine(resp))
	}
	if got := acceptEncoding.Load(); got == nil || *got != "" {
		t.Errorf("upstream Accept-Encoding = %q; want none, as the client sent none", *got)
	}
}

func TestProxy_RateLimitedRefreshReturns401(t *testing.T) {
	tm, srv := startTaskmaster(t, time.Hour)
	sc := startSidecar(t, options{tokenURL: tokenURL(srv), upstream: srv.URL, edit: func(c *tokencache.Config) {
		c.ForcedRefreshInterval = time.Hour
	}})
	waitReady(t, sc.cache)
	tm.RevokeAll()
	if resp, _ := get(t, sc.url+"/api/tasks", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("first request after revocation = %d; want 200 after one forced refresh", resp.StatusCode)
	}
	tm.RevokeAll()
	resp, _ := get(t, sc.url+"/api/tasks", nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("second request after revocation = %d; want the upstream's 401, since the refresh is rate-limited", resp.StatusCode)
	}
	if got := testutil.ToFloat64(sc.metrics.Replays.WithLabelValues("no_new_token")); got != 1 {
		t.Errorf("replays_total{result=no_new_token} = %v; want 1", got)
	}
	if got := testutil.ToFloat64(sc.metrics.ForcedRefreshes.WithLabelValues("rate_limited")); got != 1 {
		t.Errorf("token_forced_refreshes_total{result=rate_limited} = %v; want 1", got)
	}
}
