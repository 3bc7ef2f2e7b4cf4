//go:build !unix

package hydratest

import "os/exec"

func setProcessGroup(*exec.Cmd) {}

// signalProcessGroup kills the process of cmd. Without Unix process groups,
// processes that it spawned are not reached, and there is no graceful stop.
func signalProcessGroup(cmd *exec.Cmd, _ bool) {
	_ = cmd.Process.Kill()
}
