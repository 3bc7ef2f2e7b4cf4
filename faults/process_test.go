package faults_test

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/authproxy/authproxy/internal/taskmaster"
)

// process is the sidecar binary running as a child process.
type process struct {
	cmd       *exec.Cmd
	done      chan struct{}
	proxyURL  string
	adminURL  string
	stderr    *syncBuffer
	exitCode  int
	exitError error
}

// freeLoopbackAddr returns a loopback address whose port was free a moment
// ago.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startProcess runs the sidecar binary with env plus loopback listen
// addresses, and waits until /readyz returns 200. The process is killed
// when the test ends if it still runs.
func startProcess(t *testing.T, env map[string]string) *process {
	t.Helper()
	p := launch(t, env)
	client := &http.Client{Timeout: time.Second}
	awaitTrue(t, 10*time.Second, "the sidecar is ready", func() bool {
		select {
		case <-p.done:
			t.Fatalf("the sidecar exited with code %d during startup:\n%s", p.exitCode, p.stderr)
		default:
		}
		resp, err := client.Get(p.adminURL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// launch starts the binary without waiting for readiness.
func launch(t *testing.T, env map[string]string) *process {
	t.Helper()
	proxyAddr, adminAddr := freeLoopbackAddr(t), freeLoopbackAddr(t)
	cmd := exec.Command(sidecarBinary(t))
	cmd.Env = []string{"LISTEN_ADDR=" + proxyAddr, "ADMIN_ADDR=" + adminAddr, "PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &process{cmd: cmd, done: make(chan struct{}), proxyURL: "http://" + proxyAddr, adminURL: "http://" + adminAddr, stderr: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = p.stderr, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the sidecar: %v", err)
	}
	go func() {
		p.exitError = cmd.Wait()
		p.exitCode = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits up to limit for the process to exit and returns its code.
func (p *process) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.exitCode
	case <-time.After(limit):
		t.Fatalf("the sidecar did not exit within %v; its log:\n%s", limit, p.stderr)
		return -1
	}
}

func (p *process) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("send %v: %v", sig, err)
	}
}

// startTaskmaster serves a Taskmaster on loopback for the process tests.
func startTaskmaster(t *testing.T, secret string) (*taskmaster.Server, string) {
	t.Helper()
	tm := taskmaster.New(taskmaster.Config{Clients: map[string]string{testClientID: secret}})
	srv := httptest.NewServer(tm)
	t.Cleanup(srv.Close)
	return tm, srv.URL
}

func TestProcessSIGTERMUnderLoad(t *testing.T) {
	// Taskmaster does not form-decode Basic credentials, so this secret
	// has no characters that form encoding changes.
	const secret = "sigterm-secret-5"
	tm, tmURL := startTaskmaster(t, secret)
	tm.SetAPILatency(200 * time.Millisecond)
	p := startProcess(t, map[string]string{
		"CLIENT_ID": testClientID, "CLIENT_SECRET": secret, "UPSTREAM_URL": tmURL,
		"SHUTDOWN_DELAY": "500ms", "SHUTDOWN_GRACE": "5s",
	})

	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var (
		ok, refused, inFlightAtSignal atomic.Int32
		signalled                     atomic.Bool
		mu                            sync.Mutex
		lost                          []string
	)
	var wg sync.WaitGroup
	deadline := time.Now().Add(15 * time.Second)
	for range 8 {
		wg.Go(func() {
			for i := 0; i < 1000 && time.Now().Before(deadline); i++ {
				before := signalled.Load()
				resp, err := client.Get(p.proxyURL + "/api/tasks")
				if err != nil {
					if errors.Is(err, syscall.ECONNREFUSED) {
						// The listener is closed: the request never
						// started, so it was not lost.
						refused.Add(1)
						return
					}
					mu.Lock()
					lost = append(lost, err.Error())
					mu.Unlock()
					return
				}
				_, copyErr := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if copyErr != nil || resp.StatusCode != http.StatusOK {
					mu.Lock()
					lost = append(lost, resp.Status)
					mu.Unlock()
					continue
				}
				ok.Add(1)
				if !before && signalled.Load() {
					inFlightAtSignal.Add(1)
				}
			}
		})
	}
	awaitTrue(t, 5*time.Second, "requests go through", func() bool { return ok.Load() >= 16 })
	signalled.Store(true)
	p.signal(t, syscall.SIGTERM)

	// During SHUTDOWN_DELAY the sidecar reports not ready but serves.
	var lastStatus int
	var ready map[string]string
	awaitTrue(t, 2*time.Second, "/readyz reports shutting down", func() bool {
		resp, err := http.Get(p.adminURL + "/readyz")
		if err != nil {
			t.Fatalf("GET /readyz during the shutdown delay: %v", err)
		}
		defer resp.Body.Close()
		ready = nil
		_ = json.NewDecoder(resp.Body).Decode(&ready)
		lastStatus = resp.StatusCode
		return lastStatus != http.StatusOK
	})
	if lastStatus != http.StatusServiceUnavailable || ready["reason"] != "shutting down" {
		t.Errorf("/readyz during the shutdown delay = %d %v; want 503 with reason shutting down", lastStatus, ready)
	}

	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit code = %d; want 0; log:\n%s", code, p.stderr)
	}
	wg.Wait()
	if len(lost) > 0 {
		t.Errorf("%d requests were lost during shutdown: %v", len(lost), lost)
	}
	if n := inFlightAtSignal.Load(); n == 0 {
		t.Error("no request was in flight when SIGTERM arrived; the test proved nothing")
	}
	if !strings.Contains(p.stderr.String(), `"msg":"stopped"`) {
		t.Errorf("the log lacks the stopped message:\n%s", p.stderr)
	}
}

func TestProcessSIGHUPRereadsSecret(t *testing.T) {
	const oldSecret, newSecret = "hup-old-secret-1", "hup-new-secret-2"
	tm, tmURL := startTaskmaster(t, oldSecret)
	path := filepath.Join(t.TempDir(), "client-secret")
	if err := os.WriteFile(path, []byte(oldSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, map[string]string{
		"CLIENT_ID": testClientID, "CLIENT_SECRET_FILE": path, "UPSTREAM_URL": tmURL,
		"TOKEN_FORCED_REFRESH_INTERVAL": "5s",
	})
	before := tm.TokenRequests()

	tm.SetClientSecret(testClientID, newSecret)
	if err := os.WriteFile(path, []byte(newSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.signal(t, syscall.SIGHUP)
	awaitTrue(t, 5*time.Second, "SIGHUP causes a token request", func() bool { return tm.TokenRequests() == before+1 })
	records := tm.RecentTokenRequests()
	if last := records[len(records)-1]; last.Status != http.StatusOK {
		t.Errorf("token request after SIGHUP: status %d; want 200, sent with the new secret from the file", last.Status)
	}

	// A second SIGHUP within TOKEN_FORCED_REFRESH_INTERVAL is skipped.
	p.signal(t, syscall.SIGHUP)
	awaitTrue(t, 5*time.Second, "the skipped refresh is logged", func() bool {
		return strings.Contains(p.stderr.String(), "SIGHUP: token refresh skipped")
	})
	if n := tm.TokenRequests(); n != before+1 {
		t.Errorf("token requests after the second SIGHUP = %d; want %d", n-before, 1)
	}
	resp, err := http.Get(p.adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	exposition, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(exposition), `authproxy_token_forced_refreshes_total{result="rate_limited"} 1`) {
		t.Error(`/metrics lacks authproxy_token_forced_refreshes_total{result="rate_limited"} 1`)
	}

	resp, err = http.Get(p.proxyURL + "/api/tasks")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET after the rotation: status %d; want 200", resp.StatusCode)
	}
	for _, secret := range []string{oldSecret, newSecret} {
		if strings.Contains(p.stderr.String(), secret) || strings.Contains(string(exposition), secret) {
			t.Errorf("the log or /metrics contains a client secret")
		}
	}
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit code = %d; want 0", code)
	}
}

// TestProcessRejectsUnsafeConfig starts the binary with settings that
// would expose the credential, and expects exit code 2 and a message
// naming the variable, before anything listens or connects.
func TestProcessRejectsUnsafeConfig(t *testing.T) {
	base := map[string]string{
		"CLIENT_ID": testClientID, "CLIENT_SECRET": testSecret, "UPSTREAM_URL": "https://api.example.com",
	}
	tests := []struct {
		name     string
		env      map[string]string
		variable string
	}{
		{"listen on all interfaces", map[string]string{"LISTEN_ADDR": "0.0.0.0:18080"}, "LISTEN_ADDR"},
		{"listen on a host name", map[string]string{"LISTEN_ADDR": "sidecar.internal:18080"}, "LISTEN_ADDR"},
		{"plain http upstream", map[string]string{"UPSTREAM_URL": "http://api.example.com"}, "UPSTREAM_URL"},
		{"plain http token url", map[string]string{"TOKEN_URL": "http://auth.example.com/token"}, "TOKEN_URL"},
		{"required header without value", map[string]string{"REQUIRED_HEADER_NAME": "X-Key"}, "REQUIRED_HEADER_VALUE"},
		{"credentials in the URL", map[string]string{"UPSTREAM_URL": "https://user:pw@api.example.com"}, "UPSTREAM_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tt.env {
				env[k] = v
			}
			cmd := exec.Command(sidecarBinary(t))
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			for k, v := range env {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Fatalf("exit = %v; want exit code 2; output:\n%s", err, out)
			}
			if !strings.Contains(string(out), tt.variable) {
				t.Errorf("output does not name %s:\n%s", tt.variable, out)
			}
			if strings.Contains(string(out), testSecret) {
				t.Errorf("output contains the client secret:\n%s", out)
			}
		})
	}
}
