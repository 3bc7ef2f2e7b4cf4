package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/authproxy/authproxy/internal/taskmaster"
)

// baseEnv is a valid configuration; tests change one thing at a time.
func baseEnv() map[string]string {
	return map[string]string{
		"CLIENT_ID":     "app-1",
		"CLIENT_SECRET": "s3cret",
		"UPSTREAM_URL":  "http://127.0.0.1:1",
	}
}

func TestLoadConfig_Valid(t *testing.T) {
	cfg, errs := loadConfig(baseEnv())
	if len(errs) != 0 {
		t.Fatalf("loadConfig() errors = %v; want none", errs)
	}
	if got := cfg.tokenURL.String(); got != "http://127.0.0.1:1/api/auth/oauth2/token" {
		t.Errorf("token URL = %q; want UPSTREAM_URL + /api/auth/oauth2/token", got)
	}
	if cfg.ListenAddr != "127.0.0.1:8080" || cfg.AdminAddr != ":9090" {
		t.Errorf("addresses = %q, %q; want the defaults", cfg.ListenAddr, cfg.AdminAddr)
	}
	if cfg.TokenTimeout != 10*time.Second {
		t.Errorf("TOKEN_TIMEOUT = %v; want 10s", cfg.TokenTimeout)
	}
}

func TestLoadConfig_EmptyMeansDefault(t *testing.T) {
	env := baseEnv()
	env["LISTEN_ADDR"] = ""
	env["TOKEN_TIMEOUT"] = ""
	cfg, errs := loadConfig(env)
	if len(errs) != 0 {
		t.Fatalf("loadConfig() errors = %v", errs)
	}
	if cfg.ListenAddr != "127.0.0.1:8080" || cfg.TokenTimeout != 10*time.Second {
		t.Errorf("empty values gave %q and %v; want the defaults", cfg.ListenAddr, cfg.TokenTimeout)
	}
}

func TestLoadConfig_Errors(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte("\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		set  map[string]string
		want []string // each must appear in one error
	}{
		{"empty client id", map[string]string{"CLIENT_ID": ""}, []string{"CLIENT_ID is missing"}},
		{"no secret", map[string]string{"CLIENT_SECRET": ""}, []string{"CLIENT_SECRET or CLIENT_SECRET_FILE is missing"}},
		{"both secrets", map[string]string{"CLIENT_SECRET_FILE": "/x"}, []string{"both set"}},
		{"empty secret file", map[string]string{"CLIENT_SECRET": "", "CLIENT_SECRET_FILE": secretFile}, []string{"CLIENT_SECRET_FILE:", "is empty"}},
		{"missing secret file", map[string]string{"CLIENT_SECRET": "", "CLIENT_SECRET_FILE": "/nonexistent/secret"}, []string{"CLIENT_SECRET_FILE: cannot read"}},
		{"bare number duration", map[string]string{"TOKEN_TIMEOUT": "30"}, []string{"TOKEN_TIMEOUT: invalid value", "such as 30s"}},
		{"negative duration", map[string]string{"TOKEN_TIMEOUT": "-5s"}, []string{"TOKEN_TIMEOUT: -5s is not positive"}},
		{"zero duration", map[string]string{"UPSTREAM_TIMEOUT": "0s"}, []string{"UPSTREAM_TIMEOUT: 0s is not positive"}},
		{"bad ratio", map[string]string{"TOKEN_REFRESH_RATIO": "1.5"}, []string{"TOKEN_REFRESH_RATIO"}},
		{"bad bool", map[string]string{"ALLOW_INSECURE_HTTP": "yes please"}, []string{"ALLOW_INSECURE_HTTP: invalid value", "true or false"}},
		{"bad method", map[string]string{"TOKEN_AUTH_METHOD": "basic"}, []string{"TOKEN_AUTH_METHOD: \"basic\" is not supported"}},
		{"bad level", map[string]string{"LOG_LEVEL": "verbose"}, []string{"LOG_LEVEL"}},
		{"http upstream elsewhere", map[string]string{"UPSTREAM_URL": "http://api.example.test"}, []string{"UPSTREAM_URL:", "ALLOW_INSECURE_HTTP"}},
		{"http token url elsewhere", map[string]string{"TOKEN_URL": "http://idp.example.test/token"}, []string{"TOKEN_URL:", "plain http"}},
		{"not a url", map[string]string{"UPSTREAM_URL": "api.example.test"}, []string{"UPSTREAM_URL:"}},
		{"credentials in url", map[string]string{"TOKEN_URL": "https://u:p@idp.example.test/token"}, []string{"TOKEN_URL: credentials in the URL"}},
		{"open listener", map[string]string{"LISTEN_ADDR": "0.0.0.0:8080"}, []string{"LISTEN_ADDR:", "ALLOW_NON_LOOPBACK_LISTEN"}},
		{"bad admin addr", map[string]string{"ADMIN_ADDR": "9090"}, []string{"ADMIN_ADDR:"}},
		{"same addresses", map[string]string{"ADMIN_ADDR": "127.0.0.1:8080"}, []string{"LISTEN_ADDR and ADMIN_ADDR"}},
		{"reserved token param", map[string]string{"TOKEN_PARAMS": "client_secret=x"}, []string{"TOKEN_PARAMS: client_secret"}},
		{"header without value", map[string]string{"REQUIRED_HEADER_NAME": "X-Key"}, []string{"REQUIRED_HEADER_NAME and REQUIRED_HEADER_VALUE"}},
		{"margin below leeway", map[string]string{"TOKEN_REFRESH_MIN_MARGIN": "1s", "TOKEN_EXPIRY_LEEWAY": "2s"}, []string{"TOKEN_REFRESH_MIN_MARGIN"}},
		{"key file missing for jwt", map[string]string{"TOKEN_AUTH_METHOD": "private_key_jwt", "CLIENT_SECRET": ""}, []string{"CLIENT_PRIVATE_KEY_FILE is missing"}},
		{"unreadable key file", map[string]string{"TOKEN_AUTH_METHOD": "private_key_jwt", "CLIENT_SECRET": "", "CLIENT_PRIVATE_KEY_FILE": "/nonexistent/key.pem"}, []string{"CLIENT_PRIVATE_KEY_FILE: read private key"}},
		{"key file is not a key", map[string]string{"TOKEN_AUTH_METHOD": "private_key_jwt", "CLIENT_SECRET": "", "CLIENT_PRIVATE_KEY_FILE": secretFile}, []string{"CLIENT_PRIVATE_KEY_FILE: no PEM block"}},
		{"secret with jwt", map[string]string{"TOKEN_AUTH_METHOD": "private_key_jwt", "CLIENT_PRIVATE_KEY_FILE": "/nonexistent/key.pem"}, []string{"private_key_jwt does not use a secret"}},
		{"key file with basic", map[string]string{"CLIENT_PRIVATE_KEY_FILE": "/x.pem"}, []string{"CLIENT_PRIVATE_KEY_FILE is set but TOKEN_AUTH_METHOD is client_secret_basic"}},
		{"missing CA file", map[string]string{"CA_FILE": "/nonexistent/ca.pem"}, []string{"CA_FILE: read CA file"}},
		{"CA file without certificates", map[string]string{"CA_FILE": secretFile}, []string{"CA_FILE:", "no PEM certificate"}},
		{"port out of range", map[string]string{"UPSTREAM_URL": "http://127.0.0.1:99999"}, []string{"UPSTREAM_URL:", "invalid port"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := baseEnv()
			for k, v := range tt.set {
				env[k] = v
			}
			_, errs := loadConfig(env)
			all := fmt.Sprint(errs)
			for _, w := range tt.want {
				if !strings.Contains(all, w) {
					t.Errorf("errors = %v; want one containing %q", errs, w)
				}
			}
		})
	}
}

func TestLoadConfig_ReportsAllProblemsAtOnce(t *testing.T) {
	_, errs := loadConfig(map[string]string{
		"TOKEN_TIMEOUT": "30",
		"LOG_LEVEL":     "loud",
		"UPSTREAM_URL":  "ftp://x",
	})
	if len(errs) != 5 {
		t.Errorf("got %d errors; want 5 (client id, secret, timeout, level, URL): %v", len(errs), errs)
	}
	if strings.Count(fmt.Sprint(errs), "TOKEN_TIMEOUT") != 1 {
		t.Errorf("TOKEN_TIMEOUT reported more than once: %v", errs)
	}
}

func TestRun_BadConfigExitsNonZero(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(nil, map[string]string{"CLIENT_SECRET": "hunter2-secret", "TOKEN_TIMEOUT": "5"}, &stdout, &stderr)
	if code != 2 {
		t.Errorf("run() = %d; want 2", code)
	}
	for _, want := range []string{"CLIENT_ID is missing", "TOKEN_TIMEOUT"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr = %q; want it to name %q", stderr.String(), want)
		}
	}
	if strings.Contains(stderr.String(), "hunter2-secret") {
		t.Error("stderr echoes the client secret")
	}
}

func TestHelp_ListsEveryVariable(t *testing.T) {
	var stdout bytes.Buffer
	if code := run([]string{"-help"}, nil, &stdout, io.Discard); code != 0 {
		t.Fatalf("run(-help) = %d; want 0", code)
	}
	typ := reflect.TypeFor[Config]()
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		key := f.Tag.Get("env")
		if key == "" {
			continue
		}
		if !strings.Contains(stdout.String(), "  "+key+"\n") {
			t.Errorf("-help does not list %s", key)
		}
		if f.Tag.Get("help") == "" {
			t.Errorf("%s has no help text", key)
		}
	}
}

// binary is the sidecar built once for the tests that run it as a process.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "authproxy-main-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "authproxy")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	// run() and the healthcheck run in this process; their goroutines must
	// all have ended. The HTTP client's idle connections are closed first.
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines leaked: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestBinary_ServesAndShutsDownCleanly runs the built sidecar against a
// local Taskmaster: a request without credentials succeeds, the metrics
// show the token request, and SIGTERM during a slow request lets it finish
// and exits 0.
func TestBinary_ServesAndShutsDownCleanly(t *testing.T) {
	const secret = "binary-test-secret"
	tm := taskmaster.New(taskmaster.Config{Clients: map[string]string{"app-1": secret}})
	upstream := httptest.NewServer(tm)
	t.Cleanup(upstream.Close)

	listen, admin := freePort(t), freePort(t)
	cmd := exec.Command(binary)
	cmd.Env = []string{
		"CLIENT_ID=app-1", "CLIENT_SECRET=" + secret, "TOKEN_AUTH_METHOD=client_secret_post",
		"UPSTREAM_URL=" + upstream.URL, "LISTEN_ADDR=" + listen, "ADMIN_ADDR=" + admin,
		"LOG_LEVEL=debug", "SHUTDOWN_GRACE=5s",
	}
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})

	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 10s; log:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	resp, err := http.Get("http://" + listen + "/api/tasks")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var tasks []json.RawMessage
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &tasks) != nil || len(tasks) == 0 {
		t.Fatalf("GET /api/tasks = %d %s; want 200 with tasks", resp.StatusCode, body)
	}

	resp, err = http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metricsText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`authproxy_token_fetches_total{error_code="",outcome="success"} 1`,
		`authproxy_requests_total{code="200",method="get"} 1`,
		`authproxy_token_valid 1`,
	} {
		if !bytes.Contains(metricsText, []byte(want)) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// A slow request in flight when SIGTERM arrives still completes.
	tm.SetAPILatency(500 * time.Millisecond)
	slow := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + listen + "/api/tasks")
		if err != nil {
			slow <- 0
			return
		}
		resp.Body.Close()
		slow <- resp.StatusCode
	}()
	time.Sleep(100 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := <-slow; code != http.StatusOK {
		t.Errorf("in-flight request during shutdown got %d; want 200", code)
	}
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("exit after SIGTERM: %v; want status 0; log:\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sidecar still running 10s after SIGTERM")
	}
	for _, want := range []string{`"msg":"starting"`, `"msg":"obtained first token"`, `"msg":"shutting down"`, `"msg":"stopped"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s", want)
		}
	}
	if strings.Contains(logs.String(), secret) {
		t.Error("log contains the client secret")
	}
	for _, r := range tm.RecentAPIRequests() {
		for _, a := range r.Authorization {
			if tok := strings.TrimPrefix(a, "Bearer "); strings.Contains(logs.String(), tok) || bytes.Contains(metricsText, []byte(tok)) {
				t.Error("log or metrics contain the access token")
			}
		}
	}
}

func TestHealthcheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	if code := run([]string{"healthcheck"}, map[string]string{"ADMIN_ADDR": addr}, io.Discard, io.Discard); code != 0 {
		t.Errorf("healthcheck against a healthy server = %d; want 0", code)
	}
	srv.Close()
	if code := run([]string{"healthcheck"}, map[string]string{"ADMIN_ADDR": addr}, io.Discard, io.Discard); code != 1 {
		t.Errorf("healthcheck against a closed port = %d; want 1", code)
	}
}

// TestBinary_ServesHealthWhileDiscovering runs the sidecar with an issuer
// whose metadata is unavailable: the admin port must respond while it
// retries, the proxy must return 503 JSON, and SIGTERM must exit 0.
func TestBinary_ServesHealthWhileDiscovering(t *testing.T) {
	issuer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "metadata not ready", http.StatusServiceUnavailable)
	}))
	t.Cleanup(issuer.Close)

	listen, admin := freePort(t), freePort(t)
	cmd := exec.Command(binary)
	cmd.Env = []string{
		"CLIENT_ID=app-1", "CLIENT_SECRET=discovery-secret", "ISSUER_URL=" + issuer.URL,
		"UPSTREAM_URL=http://127.0.0.1:1", "LISTEN_ADDR=" + listen, "ADMIN_ADDR=" + admin,
	}
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})

	var health *http.Response
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/healthz")
		if err == nil {
			health = resp
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz did not answer within 10s; log:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if health.StatusCode != http.StatusOK {
		t.Errorf("/healthz = %d; want 200 while discovering", health.StatusCode)
	}
	resp, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !bytes.Contains(body, []byte("starting")) {
		t.Errorf("/readyz = %d %s; want 503 with reason starting", resp.StatusCode, body)
	}
	resp, err = http.Get("http://" + listen + "/api/tasks")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !bytes.Contains(body, []byte(`"token_unavailable"`)) {
		t.Errorf("proxy = %d %s; want 503 token_unavailable while discovering", resp.StatusCode, body)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("proxy 503 lacks Retry-After")
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("exit after SIGTERM during discovery: %v; want status 0; log:\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sidecar still running 10s after SIGTERM")
	}
}
