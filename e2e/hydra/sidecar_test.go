package hydra_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/authproxy/authproxy/internal/hydratest"
)

const (
	// startTimeout bounds the wait for the sidecar's /healthz after start.
	startTimeout = 15 * time.Second

	// stopTimeout is how long Cleanup waits for the sidecar to exit after
	// SIGTERM before it sends SIGKILL and fails the test.
	stopTimeout = 10 * time.Second

	// startAttempts bounds the retries when a port picked as free is taken
	// before the sidecar binds it.
	startAttempts = 3
)

// sidecar is an authproxy process started by startSidecar.
type sidecar struct {
	proxyURL string
	adminURL string
	cmd      *exec.Cmd
	log      *syncBuffer
	exited   chan struct{}
	client   *http.Client
}

// sidecarEnv returns the configuration shared by most tests: the client's
// secret with its auth method, Hydra's token endpoint and the upstream.
func sidecarEnv(h *hydratest.Hydra, up *hydratest.Upstream, client hydratest.Client) map[string]string {
	method := client.AuthMethod
	if method == "" {
		method = hydratest.ClientSecretBasic
	}
	return map[string]string{
		"CLIENT_ID":         client.ID,
		"CLIENT_SECRET":     client.Secret,
		"TOKEN_AUTH_METHOD": string(method),
		"TOKEN_URL":         h.TokenURL(),
		"UPSTREAM_URL":      up.URL(),
	}
}

// startSidecar runs the authproxy binary with env on free loopback ports and
// waits until /healthz returns 200. Cleanup stops it with SIGTERM and fails the
// test unless it exits with code 0.
func startSidecar(t *testing.T, env map[string]string) *sidecar {
	t.Helper()
	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		s, err := launch(t, env)
		if err == nil {
			return s
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
		t.Logf("attempt %d of %d: %v; retrying on new ports", attempt, startAttempts, err)
	}
	t.Fatalf("start authproxy: %v", lastErr)
	return nil
}

// launch starts one sidecar process and waits for /healthz. On failure the
// process has exited and the error contains its log.
func launch(t *testing.T, env map[string]string) (*sidecar, error) {
	t.Helper()
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	proxyAddr := "127.0.0.1:" + strconv.Itoa(ports[0])
	adminAddr := "127.0.0.1:" + strconv.Itoa(ports[1])
	config := map[string]string{
		"LOG_LEVEL":      "info",
		"SHUTDOWN_GRACE": "5s",
	}
	for key, value := range env {
		config[key] = value
	}
	config["LISTEN_ADDR"] = proxyAddr
	config["ADMIN_ADDR"] = adminAddr

	s := &sidecar{
		proxyURL: "http://" + proxyAddr,
		adminURL: "http://" + adminAddr,
		log:      &syncBuffer{},
		exited:   make(chan struct{}),
		client:   &http.Client{Timeout: 10 * time.Second},
	}
	s.cmd = newSidecarCommand(config, s.log)
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", sidecarBinary, err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()

	if err := s.waitHealthy(); err != nil {
		s.kill()
		return nil, fmt.Errorf("%w\nauthproxy log:\n%s", err, s.log.String())
	}
	t.Cleanup(func() { s.stop(t) })
	return s, nil
}

// newSidecarCommand returns the command for the sidecar binary with exactly
// the variables in config, so that no variable of the test process changes
// its configuration.
func newSidecarCommand(config map[string]string, output io.Writer) *exec.Cmd {
	cmd := exec.Command(sidecarBinary)
	cmd.Env = []string{}
	for key, value := range config {
		cmd.Env = append(cmd.Env, key+"="+value)
	}
	cmd.Stdout = output
	cmd.Stderr = output
	cmd.WaitDelay = time.Second
	return cmd
}

// runSidecarToExit runs the sidecar with env, expecting it to exit by itself
// at startup, and returns its exit code and log. It fails the test when the
// process is still running after timeout.
func runSidecarToExit(t *testing.T, env map[string]string, timeout time.Duration) (int, string) {
	t.Helper()
	ports, err := freePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	config := map[string]string{}
	for key, value := range env {
		config[key] = value
	}
	config["LISTEN_ADDR"] = "127.0.0.1:" + strconv.Itoa(ports[0])
	config["ADMIN_ADDR"] = "127.0.0.1:" + strconv.Itoa(ports[1])

	log := &syncBuffer{}
	cmd := newSidecarCommand(config, log)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", sidecarBinary, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exitErr *exec.ExitError
		switch {
		case err == nil:
			return 0, log.String()
		case errors.As(err, &exitErr):
			return exitErr.ExitCode(), log.String()
		default:
			t.Fatalf("wait for authproxy: %v", err)
		}
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("authproxy still running %v after start; expected it to exit\nlog:\n%s", timeout, log.String())
	}
	return 0, ""
}

// waitHealthy polls /healthz until it returns 200, the process exits, or
// startTimeout passes.
func (s *sidecar) waitHealthy() error {
	deadline := time.Now().Add(startTimeout)
	for {
		resp, err := s.client.Get(s.adminURL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /healthz: status %s", resp.Status)
		}
		select {
		case <-s.exited:
			return fmt.Errorf("authproxy exited before /healthz answered: %v", s.cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("authproxy not healthy after %v: %v", startTimeout, err)
		}
	}
}

// waitReady polls /readyz until it returns 200, which means the sidecar
// holds a valid token.
func (s *sidecar) waitReady(t *testing.T) {
	t.Helper()
	waitFor(t, 15*time.Second, "GET /readyz returns 200", func() bool {
		return s.adminStatus(t, "/readyz") == http.StatusOK
	})
}

// stop sends SIGTERM and checks that the sidecar exits with code 0 within
// stopTimeout. It prints the sidecar's log when the test failed.
func (s *sidecar) stop(t *testing.T) {
	t.Helper()
	defer func() {
		if t.Failed() {
			t.Logf("authproxy log:\n%s", s.log.String())
		}
	}()
	select {
	case <-s.exited:
		t.Errorf("authproxy exited before the end of the test: %v", s.cmd.ProcessState)
		return
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("send SIGTERM to authproxy: %v", err)
	}
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
		s.kill()
		t.Errorf("authproxy did not exit within %v of SIGTERM; killed it", stopTimeout)
		return
	}
	if code := s.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("authproxy exit code after SIGTERM: got %d; want 0", code)
	}
}

func (s *sidecar) kill() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// running reports whether the sidecar process has not exited.
func (s *sidecar) running() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// response is a completed HTTP exchange with the sidecar.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// do sends a request through the sidecar's proxy port. A nil body sends
// none.
func (s *sidecar) do(t *testing.T, method, path string, body []byte) response {
	t.Helper()
	resp, err := s.send(method, path, body)
	if err != nil {
		t.Fatalf("%s %s through authproxy: %v", method, path, err)
	}
	return resp
}

// send is do without the test, for goroutines.
func (s *sidecar) send(method, path string, body []byte) (response, error) {
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, s.proxyURL+path, reader)
	if err != nil {
		return response{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return response{}, fmt.Errorf("read response body: %w", err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}

// getTasks sends GET /api/tasks through the sidecar, expects 200 and
// returns the upstream's description of the accepted token.
func (s *sidecar) getTasks(t *testing.T) hydratest.UpstreamResponse {
	t.Helper()
	resp := s.do(t, http.MethodGet, "/api/tasks", nil)
	if resp.Status != http.StatusOK {
		t.Fatalf("GET /api/tasks status: got %d; want 200; body: %s", resp.Status, resp.Body)
	}
	var out hydratest.UpstreamResponse
	if err := json.Unmarshal(resp.Body, &out); err != nil {
		t.Fatalf("decode upstream response %q: %v", resp.Body, err)
	}
	return out
}

// adminStatus returns the status code of GET path on the admin port.
func (s *sidecar) adminStatus(t *testing.T, path string) int {
	t.Helper()
	resp, err := s.client.Get(s.adminURL + path)
	if err != nil {
		t.Fatalf("GET %s on the admin port: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// tokenStatus is the part of the /tokenz body that the tests read.
type tokenStatus struct {
	Valid               bool       `json:"valid"`
	LastSuccess         *time.Time `json:"last_success"`
	LastOutcome         string     `json:"last_outcome"`
	LastErrorCode       string     `json:"last_error_code"`
	LastErrorDesc       string     `json:"last_error_description"`
	ConsecutiveFailures int        `json:"consecutive_failures"`
}

// tokenz returns the sidecar's /tokenz status.
func (s *sidecar) tokenz(t *testing.T) tokenStatus {
	t.Helper()
	resp, err := s.client.Get(s.adminURL + "/tokenz")
	if err != nil {
		t.Fatalf("GET /tokenz: %v", err)
	}
	defer resp.Body.Close()
	var status tokenStatus
	if err := json.NewDecoder(resp.Body).Decode(&status); err != nil {
		t.Fatalf("decode /tokenz: %v", err)
	}
	return status
}

// metricLine matches one sample of the Prometheus text format:
// name{labels} value.
var metricLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)`)

// metricLabel matches one label pair inside the braces of a sample.
var metricLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// metric returns the sum of the samples of name on /metrics whose labels
// include every pair in labels. A metric with no such sample counts as 0.
func (s *sidecar) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	resp, err := s.client.Get(s.adminURL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()

	var sum float64
	scanner := bufio.NewScanner(resp.Body)
	for scanner.Scan() {
		match := metricLine.FindStringSubmatch(scanner.Text())
		if match == nil || match[1] != name {
			continue
		}
		got := map[string]string{}
		for _, pair := range metricLabel.FindAllStringSubmatch(match[2], -1) {
			got[pair[1]] = pair[2]
		}
		if !includesLabels(got, labels) {
			continue
		}
		value, err := strconv.ParseFloat(match[3], 64)
		if err != nil {
			t.Fatalf("metric %s: invalid value %q: %v", name, match[3], err)
		}
		sum += value
	}
	if err := scanner.Err(); err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	return sum
}

func includesLabels(got, want map[string]string) bool {
	for key, value := range want {
		if got[key] != value {
			return false
		}
	}
	return true
}

// logEntry is one JSON line of the sidecar's log.
type logEntry map[string]any

// str returns the string field key, or "" when it is absent.
func (e logEntry) str(key string) string {
	v, _ := e[key].(string)
	return v
}

// logEntries parses the sidecar's JSON log lines, skipping any line that is
// not JSON.
func (s *sidecar) logEntries() []logEntry {
	var entries []logEntry
	for line := range strings.Lines(s.log.String()) {
		var entry logEntry
		if json.Unmarshal([]byte(line), &entry) == nil {
			entries = append(entries, entry)
		}
	}
	return entries
}

// findLog returns the first log entry whose message is msg.
func (s *sidecar) findLog(msg string) (logEntry, bool) {
	for _, entry := range s.logEntries() {
		if entry.str("msg") == msg {
			return entry, true
		}
	}
	return nil, false
}

// waitFor polls cond every 50 ms until it returns true, failing the test
// with what when timeout passes first.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePorts returns n distinct TCP ports on 127.0.0.1 that were free a
// moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// syncBuffer is a bytes.Buffer that is safe for concurrent use, for the
// output of a subprocess.
type syncBuffer struct {
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
