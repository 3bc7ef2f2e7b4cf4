package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// sidecar is a running authproxy process.
type sidecar struct {
	cmd       *exec.Cmd
	done      chan struct{}
	proxyAddr string
	adminAddr string
	logPath   string
	log       *os.File
}

// startSidecar runs binary in front of upstream, with its log written to
// logPath, and waits until /readyz returns 200.
func startSidecar(binary, upstream, logPath string) (*sidecar, error) {
	proxyAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	adminAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create sidecar log: %w", err)
	}
	cmd := exec.Command(binary)
	cmd.Env = []string{
		"CLIENT_ID=" + clientID,
		"CLIENT_SECRET=" + clientSecret,
		"UPSTREAM_URL=" + upstream,
		"LISTEN_ADDR=" + proxyAddr,
		"ADMIN_ADDR=" + adminAddr,
		"LOG_LEVEL=info",
		"TOKEN_RETRY_MIN=100ms",
		"TOKEN_RETRY_MAX=1s",
		"SHUTDOWN_GRACE=5s",
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start the sidecar %s: %w", binary, err)
	}
	s := &sidecar{cmd: cmd, done: make(chan struct{}), proxyAddr: proxyAddr, adminAddr: adminAddr, logPath: logPath, log: logFile}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	if err := s.awaitReady(15 * time.Second); err != nil {
		s.kill()
		return nil, err
	}
	return s, nil
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (s *sidecar) awaitReady(limit time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("the sidecar exited during startup; its log:\n%s", s.tail(20))
		default:
		}
		resp, err := client.Get("http://" + s.adminAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("the sidecar was not ready within %v; its log:\n%s", limit, s.tail(20))
}

// sample reads the process RSS from /proc and go_goroutines from /metrics.
func (s *sidecar) sample() (sample, error) {
	rss, err := readRSS(s.cmd.Process.Pid)
	if err != nil {
		return sample{}, err
	}
	goroutines, err := s.goroutines()
	if err != nil {
		return sample{}, err
	}
	return sample{rssBytes: rss, goroutines: goroutines}, nil
}

// readRSS returns VmRSS of pid from /proc/PID/status, in bytes.
func readRSS(pid int) (int64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read RSS: %w", err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse VmRSS %q: %w", rest, err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("no VmRSS line in /proc/PID/status")
}

func (s *sidecar) goroutines() (int, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + s.adminAddr + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("scrape /metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "go_goroutines ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			return 0, fmt.Errorf("parse go_goroutines %q: %w", rest, err)
		}
		return int(v), nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read /metrics: %w", err)
	}
	return 0, errors.New("/metrics has no go_goroutines sample")
}

// stop sends SIGTERM and waits up to limit for the exit code.
func (s *sidecar) stop(limit time.Duration) (int, error) {
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return -1, fmt.Errorf("send SIGTERM: %w", err)
	}
	select {
	case <-s.done:
		return s.cmd.ProcessState.ExitCode(), nil
	case <-time.After(limit):
		return -1, fmt.Errorf("no exit within %v of SIGTERM", limit)
	}
}

// kill ends the process if it still runs and closes its log.
func (s *sidecar) kill() {
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.log.Close()
}

// tail returns the last n lines of the sidecar's log.
func (s *sidecar) tail(n int) string {
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		return "(cannot read the log: " + err.Error() + ")"
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	lines = lines[max(0, len(lines)-n):]
	var b strings.Builder
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	return b.String()
}
