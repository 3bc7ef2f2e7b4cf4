package hydra_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// sidecarBinary is the path of the authproxy binary that TestMain builds.
var sidecarBinary string

// TestMain builds the sidecar once into a temporary directory, so that every
// test runs the same binary as a subprocess.
func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "authproxy-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "create a directory for the authproxy binary: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)

	sidecarBinary = filepath.Join(dir, "authproxy")
	build := exec.Command("go", "build", "-o", sidecarBinary, "github.com/authproxy/authproxy")
	build.Stdout = os.Stderr
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "build the authproxy binary with go build: %v\n", err)
		return 1
	}
	return m.Run()
}
