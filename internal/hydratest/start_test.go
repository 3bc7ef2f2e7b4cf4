package hydratest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// recordingTB captures how Start ends a test, without ending the real one.
type recordingTB struct {
	testing.TB
	failed  bool
	skipped bool
	message string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Logf(format string, args ...any) {}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.failed = true
	r.message = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recordingTB) Skipf(format string, args ...any) {
	r.skipped = true
	r.message = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runStart calls Start on a goroutine of its own, because Fatalf and Skipf
// end the calling goroutine.
func runStart(t *testing.T) *recordingTB {
	t.Helper()
	tb := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Start(tb)
	}()
	<-done
	return tb
}

func TestStartMissingBinaryFails(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-hydra")
	t.Setenv(BinaryEnv, missing)
	t.Setenv(SkipEnv, "")

	tb := runStart(t)
	if !tb.failed {
		t.Fatalf("Start did not fail the test (skipped: %v)", tb.skipped)
	}
	if !strings.Contains(tb.message, "scripts/hydra-build.sh") {
		t.Errorf("failure message does not name scripts/hydra-build.sh: %q", tb.message)
	}
	if !strings.Contains(tb.message, missing) {
		t.Errorf("failure message does not name the missing path %s: %q", missing, tb.message)
	}
}

func TestStartMissingBinarySkips(t *testing.T) {
	t.Setenv(BinaryEnv, filepath.Join(t.TempDir(), "no-hydra"))
	t.Setenv(SkipEnv, "1")

	tb := runStart(t)
	if !tb.skipped {
		t.Fatalf("Start did not skip the test (failed: %v, message %q)", tb.failed, tb.message)
	}
	if !strings.Contains(tb.message, SkipEnv) {
		t.Errorf("skip message does not name %s: %q", SkipEnv, tb.message)
	}
}

func TestBinaryPathDefault(t *testing.T) {
	t.Setenv(BinaryEnv, "")
	got, err := binaryPath()
	if err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(root, ".cache", "hydra", "hydra-"+Version)
	if got != want {
		t.Errorf("binaryPath() = %q, expected %q", got, want)
	}

	t.Setenv(BinaryEnv, "bin/hydra")
	got, err = binaryPath()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "bin", "hydra"); got != want {
		t.Errorf("binaryPath() with a relative %s = %q, expected %q", BinaryEnv, got, want)
	}
}

// TestVersionMatchesToolModule keeps Version, and so the default binary
// name, in step with the Hydra version that scripts/hydra-build.sh builds.
func TestVersionMatchesToolModule(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "tools", "hydra", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	var found string
	for line := range strings.Lines(string(data)) {
		fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(fields) >= 2 && fields[0] == "github.com/ory/hydra/v2" {
			found = fields[1]
		}
	}
	if found != Version {
		t.Errorf("tools/hydra/go.mod requires github.com/ory/hydra/v2 %q, but Version is %q", found, Version)
	}
}
