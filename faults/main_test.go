package faults_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// binDir is the temporary folder TestMain creates for the sidecar binary.
var binDir string

// TestMain checks that no test leaves a goroutine behind, and removes the
// sidecar binary built for the process tests.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "authproxy-faults-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "create a folder for the sidecar binary: %v\n", err)
		os.Exit(1)
	}
	binDir = dir
	// goleak.VerifyTestMain calls os.Exit, so the folder is removed by
	// the cleanup hook it runs first.
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

var (
	buildOnce sync.Once
	buildErr  error
)

// sidecarBinary builds the authproxy binary on first use, once per test
// run, and returns its path.
func sidecarBinary(t *testing.T) string {
	t.Helper()
	path := filepath.Join(binDir, "authproxy")
	buildOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", path, "github.com/authproxy/authproxy").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return path
}
