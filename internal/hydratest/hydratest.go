// Package hydratest runs a real OAuth2 authorization server, ORY Hydra, for
// integration tests.
//
// Start launches the hydra binary built by scripts/hydra-build.sh with an
// in-memory SQLite store, bound to free ports on 127.0.0.1, and stops it when
// the test ends. The returned *Hydra creates OAuth2 clients through Hydra's
// admin API and introspects and revokes tokens (RFC 7662, RFC 7009).
// NewIntrospectingUpstream starts a resource server that accepts a request only
// when Hydra reports its bearer token as active.
//
// The binary is found through the HYDRA_BIN environment variable, or else at
// .cache/hydra/hydra-<Version> under the repository root. When it is missing,
// Start fails the test with the command that builds it, unless
// AUTHPROXY_SKIP_HYDRA=1 is set, in which case Start skips the test.
package hydratest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Version is the Hydra release that tools/hydra/go.mod pins and that the
// default binary path is named after.
const Version = "v2.3.0"

// Environment variables that Start reads.
const (
	// BinaryEnv names the hydra binary to run. A relative path is taken
	// relative to the repository root, as scripts/hydra-build.sh does.
	BinaryEnv = "HYDRA_BIN"

	// SkipEnv, when set to "1", makes Start skip the test instead of failing
	// it when the hydra binary is missing.
	SkipEnv = "AUTHPROXY_SKIP_HYDRA"
)

// modulePath identifies the repository root when Start searches for the
// default binary path.
const modulePath = "github.com/authproxy/authproxy"

const (
	// readyTimeout bounds the wait for /health/ready after the process starts.
	// Hydra v2.3.0 runs its SQL migrations on the in-memory database first and
	// was ready in about 0.4 s on an idle 2-core machine, so the limit leaves
	// room for a loaded CI machine.
	readyTimeout = 30 * time.Second

	// stopTimeout is how long Cleanup waits after SIGTERM before it sends
	// SIGKILL to the process group.
	stopTimeout = 5 * time.Second

	// startAttempts bounds the retries when a port picked as free is taken by
	// another process before Hydra binds it.
	startAttempts = 3

	// maxLogBytes caps the Hydra output kept for failure reports.
	maxLogBytes = 64 << 10
)

// Hydra is a running Hydra server started by Start. Its methods are safe for
// concurrent use.
type Hydra struct {
	publicURL string
	adminURL  string
	client    *http.Client
	logs      *logBuffer
	pid       int

	mu          sync.Mutex
	authMethods map[string]AuthMethod // client ID to its token endpoint auth method
}

// Options changes how StartWithOptions configures Hydra.
type Options struct {
	// Env adds Hydra configuration variables, such as TTL_ACCESS_TOKEN=5s or
	// STRATEGIES_ACCESS_TOKEN=jwt. They override the defaults that Start
	// sets, except the listen addresses and the issuer URL.
	Env map[string]string
}

// Start runs Hydra with the default configuration and registers its shutdown
// with t.Cleanup. It fails the test when Hydra does not become ready within
// 30 seconds.
func Start(t testing.TB) *Hydra {
	t.Helper()
	return StartWithOptions(t, Options{})
}

// StartWithOptions runs Hydra like Start, with extra configuration from opts.
func StartWithOptions(t testing.TB, opts Options) *Hydra {
	t.Helper()
	bin := findBinary(t)

	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		h, err := start(t, bin, opts)
		if err == nil {
			return h
		}
		lastErr = err
		if !errors.Is(err, errAddressInUse) {
			break
		}
		t.Logf("hydratest: attempt %d of %d: %v; retrying on new ports", attempt, startAttempts, err)
	}
	t.Fatalf("hydratest: start %s: %v", bin, lastErr)
	return nil
}

// PublicURL returns the base URL of Hydra's public port, which serves the
// token and revocation endpoints.
func (h *Hydra) PublicURL() string { return h.publicURL }

// AdminURL returns the base URL of Hydra's admin port, which serves the
// client management and introspection endpoints.
func (h *Hydra) AdminURL() string { return h.adminURL }

// IssuerURL returns the issuer identifier that Hydra is configured with.
func (h *Hydra) IssuerURL() string { return h.publicURL }

// TokenURL returns the OAuth2 token endpoint (RFC 6749 section 3.2).
func (h *Hydra) TokenURL() string { return h.publicURL + "/oauth2/token" }

// RevocationURL returns the token revocation endpoint (RFC 7009).
func (h *Hydra) RevocationURL() string { return h.publicURL + "/oauth2/revoke" }

// IntrospectionURL returns the token introspection endpoint (RFC 7662). It is
// on the admin port and needs no client authentication.
func (h *Hydra) IntrospectionURL() string { return h.adminURL + "/admin/oauth2/introspect" }

// Logs returns the most recent output of the Hydra process, up to 64 KiB.
func (h *Hydra) Logs() string { return h.logs.String() }

var errAddressInUse = errors.New("address already in use")

// findBinary returns the path of the hydra binary, or ends the test when it
// does not exist.
func findBinary(t testing.TB) string {
	t.Helper()
	if os.Getenv(SkipEnv) == "1" {
		t.Skipf("hydratest: skipping because %s=1", SkipEnv)
	}
	bin, err := binaryPath()
	if err == nil {
		var info os.FileInfo
		info, err = os.Stat(bin)
		if err == nil && info.IsDir() {
			err = fmt.Errorf("%s is a directory", bin)
		}
	}
	if err == nil {
		return bin
	}

	t.Fatalf("hydratest: hydra binary unavailable: %v\n"+
		"Run scripts/hydra-build.sh from the repository root to build it (or set %s to a built binary), "+
		"or set %s=1 to skip the tests that need Hydra.", err, BinaryEnv, SkipEnv)
	return ""
}

// binaryPath returns $HYDRA_BIN, resolved against the repository root when it
// is relative, or the default cache path.
func binaryPath() (string, error) {
	bin := os.Getenv(BinaryEnv)
	if filepath.IsAbs(bin) {
		return bin, nil
	}
	root, err := repoRoot()
	if err != nil {
		if bin != "" {
			return "", fmt.Errorf("%s=%q is relative: %w", BinaryEnv, bin, err)
		}
		return "", err
	}
	if bin != "" {
		return filepath.Join(root, bin), nil
	}
	return filepath.Join(root, ".cache", "hydra", "hydra-"+Version), nil
}

// repoRoot returns the closest parent of the working directory whose go.mod
// declares this module. Go runs tests in the package's directory, so every
// package of the module finds the same root.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && declaresModule(data, modulePath) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod for module %s in the working directory or its parents", modulePath)
		}
		dir = parent
	}
}

func declaresModule(goMod []byte, path string) bool {
	for line := range strings.Lines(string(goMod)) {
		fields := strings.Fields(line)
		if len(fields) == 2 && fields[0] == "module" && strings.Trim(fields[1], `"`) == path {
			return true
		}
	}
	return false
}

// start runs one Hydra process on fresh ports and waits until it is ready.
func start(t testing.TB, bin string, opts Options) (*Hydra, error) {
	t.Helper()
	publicPort, err := freePort()
	if err != nil {
		return nil, err
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}
	secret, err := randomHex(32)
	if err != nil {
		return nil, err
	}

	h := &Hydra{
		publicURL:   "http://127.0.0.1:" + strconv.Itoa(publicPort),
		adminURL:    "http://127.0.0.1:" + strconv.Itoa(adminPort),
		client:      &http.Client{Timeout: 10 * time.Second},
		logs:        &logBuffer{max: maxLogBytes},
		authMethods: make(map[string]AuthMethod),
	}

	config := map[string]string{
		"DSN":            "memory",
		"SECRETS_SYSTEM": secret,
		"LOG_LEVEL":      "warn",
	}
	for key, value := range opts.Env {
		config[key] = value
	}
	// The addresses are set last so that no option can move Hydra off
	// loopback or away from the ports that h reports.
	config["URLS_SELF_ISSUER"] = h.publicURL
	config["SERVE_PUBLIC_HOST"] = "127.0.0.1"
	config["SERVE_PUBLIC_PORT"] = strconv.Itoa(publicPort)
	config["SERVE_ADMIN_HOST"] = "127.0.0.1"
	config["SERVE_ADMIN_PORT"] = strconv.Itoa(adminPort)

	cmd := exec.Command(bin, "serve", "all", "--dev", "--sqa-opt-out")
	cmd.Env = processEnv(config)
	cmd.Stdout = h.logs
	cmd.Stderr = h.logs
	cmd.WaitDelay = time.Second
	setProcessGroup(cmd)

	if err := cmd.Start(); err != nil {
		return nil, err
	}
	h.pid = cmd.Process.Pid
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()

	stop := func() {
		signalProcessGroup(cmd, false)
		select {
		case <-exited:
		case <-time.After(stopTimeout):
			t.Logf("hydratest: hydra pid %d did not exit %v after SIGTERM; sending SIGKILL", cmd.Process.Pid, stopTimeout)
			signalProcessGroup(cmd, true)
			<-exited
		}
	}

	if err := h.waitReady(exited); err != nil {
		stop()
		logs := h.Logs()
		if strings.Contains(logs, "address already in use") {
			err = fmt.Errorf("%w: %v", errAddressInUse, err)
		}
		if waitErr != nil {
			err = fmt.Errorf("%v (process: %v)", err, waitErr)
		}
		return nil, fmt.Errorf("%w\nhydra output:\n%s", err, logs)
	}

	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("hydratest: hydra output:\n%s", h.Logs())
		}
	})
	return h, nil
}

// waitReady polls /health/ready on both ports until they return 200, the
// process exits, or readyTimeout passes.
func (h *Hydra) waitReady(exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	ticker := time.NewTicker(50 * time.Millisecond)
	defer ticker.Stop()

	var lastErr error
	for {
		lastErr = h.checkReady(ctx)
		if lastErr == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("hydra exited before it was ready: %v", lastErr)
		case <-ctx.Done():
			return fmt.Errorf("hydra not ready after %v: %v", readyTimeout, lastErr)
		case <-ticker.C:
		}
	}
}

func (h *Hydra) checkReady(ctx context.Context) error {
	for _, base := range []string{h.adminURL, h.publicURL} {
		reqCtx, cancel := context.WithTimeout(ctx, time.Second)
		req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, base+"/health/ready", nil)
		if err != nil {
			cancel()
			return err
		}
		resp, err := h.client.Do(req)
		if err != nil {
			cancel()
			return err
		}
		resp.Body.Close()
		cancel()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s/health/ready: status %s", base, resp.Status)
		}
	}
	return nil
}

// processEnv returns the environment for the Hydra process: the variables in
// config plus PATH, HOME and TMPDIR from this process. Other variables are
// left out because Hydra reads its configuration from the environment, and a
// stray DSN or SERVE_* variable would change the server under test.
func processEnv(config map[string]string) []string {
	var env []string
	for _, key := range []string{"PATH", "HOME", "TMPDIR"} {
		if value, ok := os.LookupEnv(key); ok {
			env = append(env, key+"="+value)
		}
	}
	for key, value := range config {
		env = append(env, key+"="+value)
	}
	return env
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// logBuffer is an io.Writer that keeps the last max bytes written to it.
type logBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if extra := b.buf.Len() - b.max; extra > 0 {
		b.buf.Next(extra)
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
