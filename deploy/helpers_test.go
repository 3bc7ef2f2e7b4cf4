// Package deploy_test checks that the manifests in deploy/ agree with the
// sidecar's code: the variables they set, the ports and paths they probe and
// scrape, and the metrics the alerts and the dashboard query. The tests build
// the sidecar from this repository and run it against an in-process
// Taskmaster server on loopback.
package deploy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/authproxy/authproxy/internal/taskmaster"
)

// sidecarBinary is the authproxy binary under test: AUTHPROXY_BIN, or one
// that TestMain builds from the repository root.
var sidecarBinary string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	sidecarBinary = os.Getenv("AUTHPROXY_BIN")
	if sidecarBinary == "" {
		dir, err := os.MkdirTemp("", "authproxy-deploy-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "create temporary directory:", err)
			return 1
		}
		defer os.RemoveAll(dir)

		sidecarBinary = filepath.Join(dir, "authproxy")

		build := exec.Command("go", "build", "-o", sidecarBinary, ".")
		build.Dir = ".."
		build.Stdout = os.Stderr
		build.Stderr = os.Stderr

		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build the authproxy binary (go build in the repository root):", err)
			return 1
		}
	}

	return m.Run()
}

// Client credentials that the Taskmaster server accepts. The id is the one
// the manifests' ConfigMaps set, so the sidecar runs with their CLIENT_ID.
const (
	testClientID     = "example-client"
	testClientSecret = "deploy-test-secret"
)

// startTaskmaster serves an in-memory Taskmaster (token endpoint and
// /api/tasks) on 127.0.0.1.
func startTaskmaster(t *testing.T) *httptest.Server {
	t.Helper()

	server := httptest.NewServer(taskmaster.New(taskmaster.Config{
		Clients: map[string]string{testClientID: testClientSecret},
	}))
	t.Cleanup(server.Close)

	return server
}

// writeSecretFile writes the client secret where CLIENT_SECRET_FILE can
// point, as a mounted Secret would.
func writeSecretFile(t *testing.T) string {
	t.Helper()

	path := filepath.Join(t.TempDir(), "client-secret")
	if err := os.WriteFile(path, []byte(testClientSecret+"\n"), 0o600); err != nil {
		t.Fatalf("write secret file: %v", err)
	}

	return path
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free loopback port: %v", err)
	}

	addr := listener.Addr().String()
	listener.Close()

	return addr
}

// sidecar is a running authproxy process.
type sidecar struct {
	adminURL string
	proxyURL string
	output   *lockedBuffer
}

// startSidecar runs the sidecar with exactly env (nothing is inherited),
// except LISTEN_ADDR and ADMIN_ADDR, which it sets to free loopback ports.
// It returns once /healthz answers, and stops the process with SIGTERM when
// the test ends.
func startSidecar(t *testing.T, env map[string]string) *sidecar {
	t.Helper()

	listenAddr := freeLoopbackAddr(t)
	adminAddr := freeLoopbackAddr(t)

	environ := []string{"LISTEN_ADDR=" + listenAddr, "ADMIN_ADDR=" + adminAddr}
	for key, value := range env {
		if key == "LISTEN_ADDR" || key == "ADMIN_ADDR" {
			continue
		}

		environ = append(environ, key+"="+value)
	}

	output := &lockedBuffer{}

	cmd := exec.Command(sidecarBinary)
	cmd.Env = environ
	cmd.Stdout = output
	cmd.Stderr = output

	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", sidecarBinary, err)
	}

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)

		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("sidecar did not exit within 10s of SIGTERM; output:\n%s", output.String())
		}
	})

	s := &sidecar{adminURL: "http://" + adminAddr, proxyURL: "http://" + listenAddr, output: output}

	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			t.Fatalf("sidecar exited before serving /healthz: %v; output:\n%s", err, output.String())
		default:
		}

		if status, _ := s.get(t, s.adminURL+"/healthz"); status == http.StatusOK {
			return s
		}

		time.Sleep(50 * time.Millisecond)
	}

	t.Fatalf("sidecar /healthz did not return 200 within 10s; output:\n%s", output.String())

	return nil
}

// get sends one GET request and returns the status code and body, or zero
// and the error text when the request failed.
func (s *sidecar) get(t *testing.T, url string) (int, string) {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	request, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatalf("build request for %s: %v", url, err)
	}

	response, err := http.DefaultClient.Do(request)
	if err != nil {
		return 0, err.Error()
	}
	defer response.Body.Close()

	body, _ := io.ReadAll(response.Body)

	return response.StatusCode, string(body)
}

// waitReady polls /readyz until it returns 200, for at most 10 seconds.
func (s *sidecar) waitReady(t *testing.T) {
	t.Helper()

	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if status, _ := s.get(t, s.adminURL+"/readyz"); status == http.StatusOK {
			return
		}

		time.Sleep(50 * time.Millisecond)
	}

	t.Fatalf("sidecar /readyz did not return 200 within 10s; output:\n%s", s.output.String())
}

var helpVariablePattern = regexp.MustCompile(`(?m)^  ([A-Z][A-Z0-9_]+)$`)

// sidecarVariables returns the environment variables that `authproxy -help`
// lists.
func sidecarVariables(t *testing.T) map[string]bool {
	t.Helper()

	output, err := exec.Command(sidecarBinary, "-help").CombinedOutput()
	if err != nil {
		t.Fatalf("authproxy -help: %v; output:\n%s", err, output)
	}

	variables := map[string]bool{}
	for _, match := range helpVariablePattern.FindAllStringSubmatch(string(output), -1) {
		variables[match[1]] = true
	}

	if !variables["CLIENT_ID"] || !variables["ADMIN_ADDR"] {
		t.Fatalf("authproxy -help lists no CLIENT_ID or ADMIN_ADDR; the expected format is two spaces and the name on a line of its own; output:\n%s", output)
	}

	return variables
}

// renderKustomization runs kubectl kustomize (or kustomize build, as
// installed by scripts/check-deploy.sh) on dir and decodes the objects.
func renderKustomization(t *testing.T, dir string) []map[string]any {
	t.Helper()

	var cmd *exec.Cmd

	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		cmd = exec.Command(kubectl, "kustomize", dir)
	} else if _, err := os.Stat("../.cache/bin/kustomize"); err == nil {
		cmd = exec.Command("../.cache/bin/kustomize", "build", dir)
	} else {
		t.Fatal("kubectl not found in PATH and no .cache/bin/kustomize: install kubectl, or run scripts/check-deploy.sh, which installs kustomize")
	}

	output, err := cmd.Output()
	if err != nil {
		stderr := ""
		if exitErr, ok := err.(*exec.ExitError); ok {
			stderr = string(exitErr.Stderr)
		}

		t.Fatalf("render %s: %v\n%s", dir, err, stderr)
	}

	docs, err := parseYAMLStream(string(output))
	if err != nil {
		t.Fatalf("decode rendered %s: %v", dir, err)
	}

	objects := make([]map[string]any, 0, len(docs))
	for _, doc := range docs {
		object, ok := doc.(map[string]any)
		if !ok {
			t.Fatalf("rendered %s: a document is not a mapping: %v", dir, doc)
		}

		objects = append(objects, object)
	}

	return objects
}

// field walks a decoded document along keys (for mappings) and indexes
// (for sequences) and returns nil when the path does not exist.
func field(node any, path ...any) any {
	for _, step := range path {
		switch key := step.(type) {
		case string:
			mapping, ok := node.(map[string]any)
			if !ok {
				return nil
			}

			node = mapping[key]
		case int:
			list, ok := node.([]any)
			if !ok || key >= len(list) {
				return nil
			}

			node = list[key]
		}
	}

	return node
}

func fieldString(node any, path ...any) string {
	value, _ := field(node, path...).(string)

	return value
}

func fieldList(node any, path ...any) []any {
	value, _ := field(node, path...).([]any)

	return value
}

func fieldMap(node any, path ...any) map[string]any {
	value, _ := field(node, path...).(map[string]any)

	return value
}

// portOf returns the port number of a host:port address.
func portOf(t *testing.T, addr string) string {
	t.Helper()

	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("invalid address %q: %v", addr, err)
	}

	if _, err := strconv.Atoi(port); err != nil {
		t.Fatalf("address %q has a non-numeric port", addr)
	}

	return port
}

// lockedBuffer collects a process's output for failure messages.
type lockedBuffer struct {
	mu   sync.Mutex
	data strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()

	return b.data.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()

	return b.data.String()
}
