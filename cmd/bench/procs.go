package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicksPerSecond is USER_HZ, the unit of utime and stime in
// /proc/PID/stat. Linux fixes it at 100 on every architecture that Go
// supports; reading sysconf(_SC_CLK_TCK) would need cgo.
const clockTicksPerSecond = 100

// stopTimeout is how long a process gets to exit after SIGTERM before its
// process group is killed.
const stopTimeout = 5 * time.Second

// process is a child process started in a process group of its own, so
// that stopping it also stops the processes it spawned (nginx workers).
type process struct {
	name string
	cmd  *exec.Cmd
	// stderr keeps the process's output for the error message when it
	// fails.
	stderr *tailBuffer
	done   chan struct{}
	err    error
}

// processes records every started process so that stopAll can stop them
// on any exit path.
type processes struct {
	mu   sync.Mutex
	list []*process
}

// start runs name with args and env in a process group of its own.
// Its stdout and stderr go to a buffer that keeps the last 8 KiB.
func (ps *processes) start(name string, env []string, path string, args ...string) (*process, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = env
	out := &tailBuffer{max: 8 << 10}
	cmd.Stdout = out
	cmd.Stderr = out
	// Pdeathsig stops the direct child if the harness itself is killed
	// with SIGKILL, when no cleanup code can run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, path, err)
	}
	p := &process{name: name, cmd: cmd, stderr: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	return p, nil
}

// stopAll sends SIGTERM to every process group, waits up to stopTimeout
// for each leader to exit, then sends SIGKILL to the group. The SIGKILL
// also reaches children that outlive their leader.
func (ps *processes) stopAll() {
	ps.mu.Lock()
	list := ps.list
	ps.list = nil
	ps.mu.Unlock()
	for _, p := range list {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	}
	deadline := time.After(stopTimeout)
	for _, p := range list {
		select {
		case <-p.done:
		case <-deadline:
		}
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited returns an error describing the process's exit with the end of
// its output, or nil while it runs.
func (p *process) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited (%v); its last output:\n%s", p.name, p.err, p.stderr.String())
	default:
		return nil
	}
}

// tailBuffer is an io.Writer that keeps the last max bytes written.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Another program could take it before the caller binds it; the caller's
// readiness check then fails with a clear message.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitHTTP polls url with GET until the response status is want or
// timeout passes. It gives up early when p exits.
func waitHTTP(ctx context.Context, p *process, url string, header http.Header, want int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	var last string
	for {
		if err := p.exited(); err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Header = header.Clone()
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
			last = "status " + resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %v: GET %s: %s; its last output:\n%s",
				p.name, timeout, url, last, p.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// cpuSeconds returns the user plus system CPU time of pid from
// /proc/PID/stat.
func cpuSeconds(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read CPU time: %w", err)
	}
	fields, err := statFields(data)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	// After the command, field 14 (utime) and 15 (stime) are at index
	// 11 and 12.
	utime, err1 := strconv.ParseUint(fields[11], 10, 64)
	stime, err2 := strconv.ParseUint(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: invalid utime or stime: %w", pid, err)
	}
	return float64(utime+stime) / clockTicksPerSecond, nil
}

// statFields returns the fields of a /proc/PID/stat line that follow the
// command name, which is in parentheses and may itself contain spaces or
// parentheses. The first returned field is field 3 (state).
func statFields(data []byte) ([]string, error) {
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return nil, errors.New("no command name in parentheses")
	}
	fields := strings.Fields(string(data[end+1:]))
	if len(fields) < 13 {
		return nil, fmt.Errorf("%d fields after the command name; want at least 13", len(fields))
	}
	return fields, nil
}

// children returns the pids whose parent is pid, found by scanning /proc.
func children(pid int) ([]int, error) {
	dirs, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return nil, err
	}
	var kids []int
	for _, path := range dirs {
		data, err := os.ReadFile(path)
		if err != nil {
			continue // The process exited during the scan.
		}
		fields, err := statFields(data)
		if err != nil {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid == pid {
			child, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
			kids = append(kids, child)
		}
	}
	return kids, nil
}

// treeCPUSeconds returns the CPU time of pid plus that of its direct
// children, which for nginx are the workers.
func treeCPUSeconds(pid int) (float64, error) {
	total, err := cpuSeconds(pid)
	if err != nil {
		return 0, err
	}
	kids, err := children(pid)
	if err != nil {
		return 0, err
	}
	for _, kid := range kids {
		s, err := cpuSeconds(kid)
		if err != nil {
			return 0, err
		}
		total += s
	}
	return total, nil
}

// memoryKiB returns VmRSS and VmHWM (peak RSS) of pid, in KiB, from
// /proc/PID/status.
func memoryKiB(pid int) (rss, hwm int64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("read memory use: %w", err)
	}
	return parseStatusMemory(string(data))
}

// parseStatusMemory reads the VmRSS and VmHWM lines of a /proc/PID/status
// file, whose values are in kB (KiB).
func parseStatusMemory(status string) (rss, hwm int64, err error) {
	found := 0
	for line := range strings.Lines(status) {
		key, value, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("invalid %s line %q: %w", key, strings.TrimSpace(line), err)
		}
		if key == "VmRSS" {
			rss = n
		} else {
			hwm = n
		}
		found++
	}
	if found != 2 {
		return 0, 0, errors.New("VmRSS or VmHWM missing from /proc/PID/status")
	}
	return rss, hwm, nil
}

// treeMemoryKiB sums VmRSS and VmHWM over pid and its direct children.
// Shared pages count once per process, so for nginx the sum overstates the
// memory in use.
func treeMemoryKiB(pid int) (rss, hwm int64, err error) {
	rss, hwm, err = memoryKiB(pid)
	if err != nil {
		return 0, 0, err
	}
	kids, err := children(pid)
	if err != nil {
		return 0, 0, err
	}
	for _, kid := range kids {
		r, h, err := memoryKiB(kid)
		if err != nil {
			return 0, 0, err
		}
		rss += r
		hwm += h
	}
	return rss, hwm, nil
}
