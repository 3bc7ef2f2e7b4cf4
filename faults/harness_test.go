package faults_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/authproxy/authproxy/metrics"
	"github.com/authproxy/authproxy/proxy"
	"github.com/authproxy/authproxy/tokencache"
)

// The client credentials every in-process sidecar uses. The secret
// contains characters that form encoding and Basic encoding change, so a
// leak of an encoded form is caught as well.
const (
	testClientID = "fault-client"
	testSecret   = "s3cr3t+/fault=value"
)

// config is the part of the sidecar configuration the fault tests vary.
// Zero fields take the values of [defaultConfig].
type config struct {
	tokenURL string
	upstream string
	method   tokencache.AuthMethod
	secret   tokencache.SecretSource
	// onCredentialError runs after an invalid_client response, where
	// main.go re-reads CLIENT_SECRET_FILE.
	onCredentialError func()

	tokenTimeout          time.Duration
	defaultLifetime       time.Duration
	retryMin, retryMax    time.Duration
	forcedRefreshInterval time.Duration
	upstreamTimeout       time.Duration
	readHeaderTimeout     time.Duration
	maxHeaderBytes        int
	maxReplayBody         int64
	requiredHeader        string
	requiredValue         string
}

// defaultConfig keeps backoffs short so that the tests recover quickly.
var defaultConfig = config{
	method:                tokencache.ClientSecretBasic,
	tokenTimeout:          2 * time.Second,
	defaultLifetime:       5 * time.Minute,
	retryMin:              20 * time.Millisecond,
	retryMax:              100 * time.Millisecond,
	forcedRefreshInterval: 200 * time.Millisecond,
	upstreamTimeout:       5 * time.Second,
	readHeaderTimeout:     5 * time.Second,
	maxHeaderBytes:        65536,
	maxReplayBody:         1 << 20,
}

func (c *config) fillDefaults() {
	d := defaultConfig
	setDuration := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	if c.method == "" {
		c.method = d.method
	}
	if c.secret == nil {
		c.secret = tokencache.StaticSecret(testSecret)
	}
	setDuration(&c.tokenTimeout, d.tokenTimeout)
	setDuration(&c.defaultLifetime, d.defaultLifetime)
	setDuration(&c.retryMin, d.retryMin)
	setDuration(&c.retryMax, d.retryMax)
	setDuration(&c.forcedRefreshInterval, d.forcedRefreshInterval)
	setDuration(&c.upstreamTimeout, d.upstreamTimeout)
	setDuration(&c.readHeaderTimeout, d.readHeaderTimeout)
	if c.maxHeaderBytes == 0 {
		c.maxHeaderBytes = d.maxHeaderBytes
	}
	if c.maxReplayBody == 0 {
		c.maxReplayBody = d.maxReplayBody
	}
}

// sidecar is the proxy, token cache and metrics wired as main.go wires
// them, serving on a loopback port.
type sidecar struct {
	URL      string
	Addr     string
	Cache    *tokencache.Cache
	Metrics  *metrics.Metrics
	Registry *prometheus.Registry
	Logs     *observer.ObservedLogs
	// logText is every log entry encoded as the binary encodes it.
	logText *syncBuffer
	watch   *leakWatch
}

// startSidecar starts an in-process sidecar and stops it when the test
// ends. At the end it also checks that no secret registered with watch
// appears in any log line or in the /metrics output.
func startSidecar(t *testing.T, cfg config, watch *leakWatch) *sidecar {
	t.Helper()
	cfg.fillDefaults()
	watch.add(testSecret)
	watch.addBasic(testClientID, testSecret)

	observed, logs := observer.New(zapcore.DebugLevel)
	logText := &syncBuffer{}
	encoder := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	log := zap.New(zapcore.NewTee(observed, zapcore.NewCore(encoder, zapcore.AddSync(logText), zapcore.DebugLevel)))

	reg := prometheus.NewRegistry()
	m := metrics.New(reg, "fault-test")

	tokenTransport, err := proxy.NewTransport(proxy.TransportConfig{MaxIdleConns: 2})
	if err != nil {
		t.Fatalf("token transport: %v", err)
	}
	fetcher := &tokencache.ClientCredentials{
		TokenURL: cfg.tokenURL,
		ClientID: testClientID,
		Secret:   cfg.secret,
		Method:   cfg.method,
		HTTPClient: &http.Client{
			Transport: tokenTransport,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}
	cache, err := tokencache.New(tokencache.Config{
		Fetcher:               fetcher,
		Timeout:               cfg.tokenTimeout,
		DefaultLifetime:       cfg.defaultLifetime,
		RetryMin:              cfg.retryMin,
		RetryMax:              cfg.retryMax,
		ForcedRefreshInterval: cfg.forcedRefreshInterval,
		Logger:                log.Named("tokencache"),
		Observer:              m,
		OnCredentialError:     cfg.onCredentialError,
	})
	if err != nil {
		t.Fatalf("tokencache.New: %v", err)
	}
	upstreamURL, err := url.Parse(cfg.upstream)
	if err != nil {
		t.Fatalf("parse upstream %q: %v", cfg.upstream, err)
	}
	transport, err := proxy.NewTransport(proxy.TransportConfig{ResponseHeaderTimeout: cfg.upstreamTimeout})
	if err != nil {
		t.Fatalf("proxy transport: %v", err)
	}
	px, err := proxy.New(proxy.Config{
		Upstream:       upstreamURL,
		Tokens:         cache,
		Transport:      transport,
		MaxReplayBody:  cfg.maxReplayBody,
		RequiredHeader: cfg.requiredHeader,
		RequiredValue:  cfg.requiredValue,
		Logger:         log.Named("proxy"),
		Metrics:        m,
	})
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	serverLog, err := zap.NewStdLogAt(log.Named("http"), zap.WarnLevel)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           px,
		ReadHeaderTimeout: cfg.readHeaderTimeout,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    cfg.maxHeaderBytes,
		ErrorLog:          serverLog,
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	runCtx, stopRun := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		cache.Run(runCtx)
	}()

	s := &sidecar{
		URL: "http://" + ln.Addr().String(), Addr: ln.Addr().String(),
		Cache: cache, Metrics: m, Registry: reg, Logs: logs, logText: logText, watch: watch,
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		<-served
		stopRun()
		<-ran
		cache.Close()
		transport.CloseIdleConnections()
		tokenTransport.CloseIdleConnections()
		s.checkNoLeak(t)
	})
	return s
}

// checkNoLeak fails the test when a watched secret appears in the logs or
// in the /metrics output.
func (s *sidecar) checkNoLeak(t *testing.T) {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	exposition := rec.Body.String()
	logText := s.logText.String()
	status, err := json.Marshal(s.Cache.Status())
	if err != nil {
		t.Errorf("encode Cache.Status(): %v", err)
	}
	if !strings.Contains(exposition, "authproxy_requests_total") && !strings.Contains(exposition, "authproxy_token_valid") {
		t.Errorf("/metrics output lacks the authproxy metrics; the leak check would prove nothing:\n%.500s", exposition)
	}
	for _, secret := range s.watch.values() {
		if strings.Contains(logText, secret) {
			t.Errorf("the log contains the secret value %q:\n%s", secret, lineContaining(logText, secret))
		}
		if strings.Contains(exposition, secret) {
			t.Errorf("/metrics contains the secret value %q", secret)
		}
		if strings.Contains(string(status), secret) {
			t.Errorf("Cache.Status(), which /tokenz serves, contains the secret value %q", secret)
		}
	}
}

func lineContaining(text, needle string) string {
	for line := range strings.SplitSeq(text, "\n") {
		if strings.Contains(line, needle) {
			return line
		}
	}
	return ""
}

// leakWatch contains every value that must never appear in a log line or
// in /metrics: the client secret in its encoded forms, every issued token
// and every credential a test client sends. It is safe for concurrent use.
type leakWatch struct {
	// mu guards set.
	mu  sync.Mutex
	set map[string]bool
}

func newLeakWatch() *leakWatch { return &leakWatch{set: map[string]bool{}} }

func (w *leakWatch) add(values ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, v := range values {
		if v != "" {
			w.set[v] = true
		}
	}
}

// addBasic watches the Basic credentials of id and secret, with and
// without the form encoding RFC 6749 section 2.3.1 applies first, and the
// form-encoded secret alone.
func (w *leakWatch) addBasic(id, secret string) {
	w.add(url.QueryEscape(secret))
	w.add(base64.StdEncoding.EncodeToString([]byte(id + ":" + secret)))
	w.add(base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(secret))))
}

func (w *leakWatch) values() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.set))
	for v := range w.set {
		out = append(out, v)
	}
	return out
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	// mu guards buf.
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tokenEndpoint is a loopback token endpoint whose responses a test sets. It
// gives each request a fresh random token value, registered with the leak
// watch, and records when each request arrived.
type tokenEndpoint struct {
	URL   string
	watch *leakWatch

	// mu guards the fields below.
	mu       sync.Mutex
	respond  func(w http.ResponseWriter, r *http.Request, token string)
	arrivals []time.Time
	issued   []string
	secrets  []string
}

// newTokenEndpoint starts a token endpoint that issues Bearer tokens valid
// for an hour.
func newTokenEndpoint(t *testing.T, watch *leakWatch) *tokenEndpoint {
	t.Helper()
	e := &tokenEndpoint{watch: watch, respond: func(w http.ResponseWriter, r *http.Request, token string) {
		writeToken(w, token, "Bearer", 3600)
	}}
	srv := httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(srv.Close)
	e.URL = srv.URL + "/token"
	return e
}

func (e *tokenEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	token := "tok-" + randomHex(12)
	e.watch.add(token)
	// Reading the whole body lets the server notice when the client
	// hangs up, which ends r.Context().
	_ = r.ParseForm()
	_, secret, _ := r.BasicAuth()
	if secret == "" {
		secret = r.PostForm.Get("client_secret")
	}
	e.mu.Lock()
	e.arrivals = append(e.arrivals, time.Now())
	e.issued = append(e.issued, token)
	e.secrets = append(e.secrets, secret)
	respond := e.respond
	e.mu.Unlock()
	respond(w, r, token)
}

// setResponder replaces the function that writes each response.
func (e *tokenEndpoint) setResponder(f func(w http.ResponseWriter, r *http.Request, token string)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.respond = f
}

func (e *tokenEndpoint) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.arrivals)
}

func (e *tokenEndpoint) arrivalTimes() []time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]time.Time(nil), e.arrivals...)
}

// token returns the value issued to request i, counting from 0.
func (e *tokenEndpoint) token(i int) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if i >= len(e.issued) {
		return ""
	}
	return e.issued[i]
}

// secretOf returns the client secret request i carried, form-decoded.
func (e *tokenEndpoint) secretOf(i int) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if i >= len(e.secrets) {
		return ""
	}
	return e.secrets[i]
}

// writeToken sends a token response. A negative expiresIn leaves the
// field out, and an empty tokenType leaves token_type out.
func writeToken(w http.ResponseWriter, token, tokenType string, expiresIn int) {
	body := map[string]any{"access_token": token}
	if tokenType != "" {
		body["token_type"] = tokenType
	}
	if expiresIn >= 0 {
		body["expires_in"] = expiresIn
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(body)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// upstreamRequest is what the upstream received.
type upstreamRequest struct {
	Method        string
	RequestURI    string
	Host          string
	Authorization []string
	Header        http.Header
	Body          []byte
	BodyErr       error
}

// upstream is a loopback upstream that records every request. Its handler
// runs after the request body has been read and recorded.
type upstream struct {
	URL string
	srv *httptest.Server

	// mu guards the fields below.
	mu       sync.Mutex
	handler  func(w http.ResponseWriter, r *http.Request, rec upstreamRequest)
	requests []upstreamRequest
}

// newUpstream starts an upstream that answers 200 with {"ok":true}.
func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{handler: func(w http.ResponseWriter, r *http.Request, rec upstreamRequest) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	u.URL = u.srv.URL
	return u
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	rec := upstreamRequest{
		Method: r.Method, RequestURI: r.RequestURI, Host: r.Host,
		Authorization: r.Header.Values("Authorization"), Header: r.Header.Clone(),
		Body: body, BodyErr: err,
	}
	u.mu.Lock()
	u.requests = append(u.requests, rec)
	handler := u.handler
	u.mu.Unlock()
	handler(w, r, rec)
}

func (u *upstream) setHandler(f func(w http.ResponseWriter, r *http.Request, rec upstreamRequest)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.handler = f
}

func (u *upstream) received() []upstreamRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]upstreamRequest(nil), u.requests...)
}

// response is a complete client-side response.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// newClient returns an HTTP client whose idle connections close when the
// test ends.
func newClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

// do sends req and reads the whole response.
func do(t *testing.T, client *http.Client, req *http.Request) response {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: body}
}

func get(t *testing.T, client *http.Client, target string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		t.Fatalf("build request: %v", err)
	}
	return do(t, client, req)
}

// errorBody is the JSON error the sidecar sends.
type errorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// checkErrorResponse checks the status, the JSON content type and the
// error code of a response the sidecar made itself.
func checkErrorResponse(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.Status != status {
		t.Errorf("status = %d; want %d (body %q)", r.Status, status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q; want application/json", ct)
	}
	var body errorBody
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatalf("body %q is not JSON: %v", r.Body, err)
	}
	if body.Error != code {
		t.Errorf("error = %q; want %q", body.Error, code)
	}
	if body.Description == "" {
		t.Errorf("error_description is empty in %q", r.Body)
	}
}

// awaitCount waits until counter c reaches want: the proxy's request
// metrics are updated after the response has reached the client.
func awaitCount(t *testing.T, c prometheus.Collector, want float64, name string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(c) < want {
		if time.Now().After(deadline) {
			t.Errorf("%s = %v; want %v", name, testutil.ToFloat64(c), want)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := testutil.ToFloat64(c); got != want {
		t.Errorf("%s = %v; want %v", name, got, want)
	}
}

// awaitTrue polls cond every 10ms until it holds or limit passes.
func awaitTrue(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// awaitReady waits until the cache holds a token.
func (s *sidecar) awaitReady(t *testing.T) {
	t.Helper()
	awaitTrue(t, 5*time.Second, "the cache holds a token", s.Cache.Ready)
}

// checkServes checks that a plain GET goes through after the fault,
// waiting for the token cache to recover first.
func (s *sidecar) checkServes(t *testing.T, client *http.Client) {
	t.Helper()
	s.awaitReady(t)
	r := get(t, client, s.URL+"/after-fault")
	if r.Status != http.StatusOK {
		t.Errorf("GET after the fault: status = %d; want 200 (body %q)", r.Status, r.Body)
	}
}

// fetches returns authproxy_token_fetches_total for one outcome and code.
func (s *sidecar) fetches(outcome, code string) float64 {
	return testutil.ToFloat64(s.Metrics.TokenFetches.WithLabelValues(outcome, code))
}

func (s *sidecar) upstreamErrors(kind string) float64 {
	return testutil.ToFloat64(s.Metrics.UpstreamErrors.WithLabelValues(kind))
}

func (s *sidecar) requests(method, code string) float64 {
	return testutil.ToFloat64(s.Metrics.Requests.WithLabelValues(method, code))
}

// checkLogged checks that a log entry containing snippet was written at
// level. It waits up to 2s for the entry, because the background refresh
// loop may log a failure after a client already got its 503.
func (s *sidecar) checkLogged(t *testing.T, level zapcore.Level, snippet string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	entries := s.Logs.FilterMessageSnippet(snippet).All()
	for len(entries) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		entries = s.Logs.FilterMessageSnippet(snippet).All()
	}
	if len(entries) == 0 {
		t.Errorf("no log entry contains %q; entries: %s", snippet, s.messages())
		return
	}
	for _, e := range entries {
		if e.Level != level {
			t.Errorf("log %q at level %v; want %v", e.Message, e.Level, level)
		}
	}
}

// checkNoLogAbove checks that nothing was logged above level.
func (s *sidecar) checkNoLogAbove(t *testing.T, level zapcore.Level) {
	t.Helper()
	for _, e := range s.Logs.All() {
		if e.Level > level {
			t.Errorf("unexpected log at level %v: %q", e.Level, e.Message)
		}
	}
}

func (s *sidecar) messages() string {
	var b strings.Builder
	for _, e := range s.Logs.All() {
		fmt.Fprintf(&b, "\n  %v %s %v", e.Level, e.Message, e.ContextMap())
	}
	return b.String()
}
