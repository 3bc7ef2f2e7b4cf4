//go:build unix

package hydratest

import (
	"os/exec"
	"syscall"
)

// setProcessGroup starts cmd in a process group of its own, so that
// signalProcessGroup reaches every process it spawns.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// signalProcessGroup sends SIGTERM, or SIGKILL when kill is true, to the
// process group of cmd.
func signalProcessGroup(cmd *exec.Cmd, kill bool) {
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	// A negative pid addresses the group whose id is the leader's pid.
	_ = syscall.Kill(-cmd.Process.Pid, sig)
}
