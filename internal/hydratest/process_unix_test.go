//go:build unix

package hydratest

import (
	"errors"
	"syscall"
	"testing"
)

// TestStopLeavesNoProcess checks that the cleanup registered by Start ends
// the Hydra process.
func TestStopLeavesNoProcess(t *testing.T) {
	var pid int
	t.Run("run", func(t *testing.T) {
		h := Start(t)
		pid = h.pid
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("hydra pid %d is not running while the test runs: %v", pid, err)
		}
	})
	if pid == 0 {
		t.Skip("the subtest did not start hydra and reported why")
	}
	// The cleanup waits for the process, so its pid is gone, not a zombie.
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("hydra pid %d after cleanup: kill(0) = %v, expected ESRCH", pid, err)
	}
}
