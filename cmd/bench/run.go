package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Names of the load targets, in the order each round loads them.
const (
	targetDirect   = "direct"
	targetNginx    = "nginx"
	targetLong     = "sidecar-long"
	targetExpiring = "sidecar-expiring"
)

// Token lifetimes of the two sidecars. The expiring sidecar refreshes its
// token about every 2 s: its refresh margin of 1 s and leeway of 500 ms
// fit the 3 s lifetime (the margin is capped at half the lifetime and the
// leeway at a quarter).
const (
	longLifetime     = time.Hour
	expiringLifetime = 3 * time.Second
)

// directToken is the static Bearer token that wrk sends on the direct
// path.
const directToken = "direct-static-bench-token"

// startTimeout bounds the wait for each server to become ready.
const startTimeout = 30 * time.Second

// bench holds the processes and addresses of one harness run.
type bench struct {
	procs    processes
	dir      string
	script   string
	upstream *process
	// targets are the load targets in round-robin order.
	targets []*target
}

// target is one path from wrk to the upstream.
type target struct {
	name    string
	baseURL string
	// proc is the proxy process, nil for the direct path.
	proc *process
	// withChildren sums the CPU time and memory of proc's children too
	// (nginx's workers).
	withChildren bool
	// header is a request header that wrk sends, such as the direct
	// path's Authorization; empty for the proxies.
	header string
	// adminURL is the sidecar's admin base URL, empty for other targets.
	adminURL string
	// idleRSSKiB is the proxy's RSS after start, before any load.
	idleRSSKiB int64
}

// point is one measured wrk run.
type point struct {
	target string
	body   string
	conns  int
	result wrkResult
	// cpuSeconds is the proxy's CPU time during the run, or -1 for the
	// direct path.
	cpuSeconds float64
	// upstreamCPUSeconds is the upstream's CPU time during the run: the
	// cost of a Go net/http server alone, for scale.
	upstreamCPUSeconds float64
}

// bodies are the upstream paths that each round loads.
var bodies = []struct{ name, path string }{
	{"small", smallPath},
	{"64KiB", largePath},
}

// runBench runs the comparison and writes the report to stdout and, when
// set, to opts.out.
func runBench(ctx context.Context, opts options, stdout io.Writer) error {
	if err := checkTools(); err != nil {
		return err
	}
	b := &bench{}
	defer b.procs.stopAll()
	dir, err := os.MkdirTemp("", "authproxy-bench-")
	if err != nil {
		return fmt.Errorf("create temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	b.dir = dir
	if b.script, err = writeWrkScript(dir); err != nil {
		return err
	}
	runs := len(opts.conns) * len(bodies) * 4 * opts.rounds
	progress("%d runs of %v after %v of warm-up each, about %v in all",
		runs, opts.duration, opts.warmup, time.Duration(runs)*(opts.duration+opts.warmup+time.Second))

	if err := b.start(ctx); err != nil {
		return err
	}
	machine, err := describeMachine()
	if err != nil {
		return err
	}
	machine.loadBefore = loadAverage()
	if busy := machine.loadBefore; busy != "" {
		progress("load average before the load: %s; other processes on the machine skew the results", busy)
	}
	fetchesBefore, err := b.sidecarCounters(ctx)
	if err != nil {
		return err
	}
	points, err := b.load(ctx, opts)
	if err != nil {
		return err
	}
	fetchesAfter, err := b.sidecarCounters(ctx)
	if err != nil {
		return err
	}
	machine.loadAfter = loadAverage()
	rep := &report{
		opts:     opts,
		machine:  machine,
		points:   points,
		memory:   map[string]memoryUse{},
		counters: map[string]sidecarCounters{},
	}
	for _, t := range b.targets {
		if t.proc == nil {
			continue
		}
		rss, hwm, err := b.memory(t)
		if err != nil {
			return err
		}
		rep.memory[t.name] = memoryUse{idleKiB: t.idleRSSKiB, afterKiB: rss, peakKiB: hwm}
		if t.adminURL != "" {
			rep.counters[t.name] = fetchesAfter[t.name].minus(fetchesBefore[t.name])
		}
	}
	text := rep.markdown()
	if _, err := io.WriteString(stdout, text); err != nil {
		return err
	}
	if opts.out != "" {
		if err := os.WriteFile(opts.out, []byte(text), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	if err := rep.checkCounters(); err != nil {
		return err
	}
	if missed := rep.missedTargets(); opts.strict && missed > 0 {
		return fmt.Errorf("%d performance targets missed (-strict)", missed)
	}
	return nil
}

// checkTools returns an error naming the missing tools and how to install
// them.
func checkTools() error {
	var missing []string
	if _, err := exec.LookPath("wrk"); err != nil {
		missing = append(missing, "wrk")
	}
	if _, err := nginxPath(); err != nil {
		missing = append(missing, "nginx")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s not found; install with apt-get install -y --no-install-recommends nginx wrk, or run scripts/bench.sh, which does",
			strings.Join(missing, " and "))
	}
	return nil
}

// nginxPath finds nginx in PATH or in /usr/sbin, where Debian installs it
// and which a non-root PATH often lacks.
func nginxPath() (string, error) {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	return exec.LookPath("/usr/sbin/nginx")
}

// start builds the binaries and starts every server, then records each
// proxy's idle memory.
func (b *bench) start(ctx context.Context) error {
	authproxy, taskmasterBin, err := b.build(ctx)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the harness executable: %w", err)
	}
	secret := randomSecret()
	env := baseEnv()

	upstreamPort, err := freePort()
	if err != nil {
		return err
	}
	upstreamAddr := "127.0.0.1:" + strconv.Itoa(upstreamPort)
	upstream, err := b.procs.start("upstream", env, self, upstreamFlag, upstreamAddr)
	if err != nil {
		return err
	}
	b.upstream = upstream
	bearer := http.Header{"Authorization": {"Bearer readiness-check"}}
	if err := waitHTTP(ctx, upstream, "http://"+upstreamAddr+smallPath, bearer, http.StatusOK, startTimeout); err != nil {
		return err
	}
	b.targets = append(b.targets, &target{
		name:    targetDirect,
		baseURL: "http://" + upstreamAddr,
		header:  "Authorization: Bearer " + directToken,
	})

	nginx, err := b.startNginx(ctx, upstreamAddr)
	if err != nil {
		return err
	}
	b.targets = append(b.targets, nginx)

	for _, s := range []struct {
		name     string
		lifetime time.Duration
		extra    []string
	}{
		{targetLong, longLifetime, nil},
		{targetExpiring, expiringLifetime, []string{"TOKEN_REFRESH_MIN_MARGIN=1s", "TOKEN_EXPIRY_LEEWAY=500ms"}},
	} {
		tokenURL, err := b.startTaskmaster(ctx, taskmasterBin, s.name, secret, s.lifetime)
		if err != nil {
			return err
		}
		t, err := b.startSidecar(ctx, authproxy, s.name, upstreamAddr, tokenURL, secret, s.extra)
		if err != nil {
			return err
		}
		b.targets = append(b.targets, t)
	}

	// Let the runtime finish its start-up work before reading idle memory.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Second):
	}
	for _, t := range b.targets {
		if t.proc == nil {
			continue
		}
		rss, _, err := b.memory(t)
		if err != nil {
			return err
		}
		t.idleRSSKiB = rss
	}
	return nil
}

// build compiles the sidecar and the Taskmaster command into the
// temporary directory.
func (b *bench) build(ctx context.Context) (authproxy, taskmasterBin string, err error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	if strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		return "", "", fmt.Errorf("run the harness inside the authproxy module, such as go run ./cmd/bench from its root")
	}
	authproxy = filepath.Join(b.dir, "authproxy")
	taskmasterBin = filepath.Join(b.dir, "taskmaster")
	progress("building the sidecar and Taskmaster")
	for _, build := range [][]string{
		{"build", "-o", authproxy, "."},
		{"build", "-o", taskmasterBin, "./cmd/taskmaster"},
	} {
		cmd := exec.CommandContext(ctx, "go", build...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go %s failed: %w\n%s", strings.Join(build, " "), err, out)
		}
	}
	return authproxy, taskmasterBin, nil
}

func (b *bench) startNginx(ctx context.Context, upstreamAddr string) (*target, error) {
	path, err := nginxPath()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	listen := "127.0.0.1:" + strconv.Itoa(port)
	nginxDir := filepath.Join(b.dir, "nginx")
	if err := os.Mkdir(nginxDir, 0o755); err != nil {
		return nil, fmt.Errorf("create nginx directory: %w", err)
	}
	conf, err := writeNginxConfig(nginxDir, listen, upstreamAddr)
	if err != nil {
		return nil, err
	}
	proc, err := b.procs.start("nginx", baseEnv(), path,
		"-c", conf, "-p", nginxDir, "-e", filepath.Join(nginxDir, "error.log"))
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, proc, "http://"+listen+smallPath, nil, http.StatusOK, startTimeout); err != nil {
		return nil, err
	}
	return &target{name: targetNginx, baseURL: "http://" + listen, proc: proc, withChildren: true}, nil
}

// startTaskmaster starts a Taskmaster token endpoint that issues tokens of
// the given lifetime and returns its token URL.
func (b *bench) startTaskmaster(ctx context.Context, bin, name, secret string, lifetime time.Duration) (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	env := append(baseEnv(), "TASKMASTER_CLIENT_SECRET="+secret)
	proc, err := b.procs.start("taskmaster for "+name, env, bin,
		"-addr", addr, "-client-id", "bench", "-token-lifetime", lifetime.String())
	if err != nil {
		return "", err
	}
	// The task API responds with 401 to a request without a token once the
	// server is up.
	if err := waitHTTP(ctx, proc, "http://"+addr+"/api/tasks", nil, http.StatusUnauthorized, startTimeout); err != nil {
		return "", err
	}
	return "http://" + addr + "/api/auth/oauth2/token", nil
}

func (b *bench) startSidecar(ctx context.Context, bin, name, upstreamAddr, tokenURL, secret string, extra []string) (*target, error) {
	listenPort, err := freePort()
	if err != nil {
		return nil, err
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, err
	}
	listen := "127.0.0.1:" + strconv.Itoa(listenPort)
	admin := "127.0.0.1:" + strconv.Itoa(adminPort)
	env := append(baseEnv(),
		"CLIENT_ID=bench",
		"CLIENT_SECRET="+secret,
		"UPSTREAM_URL=http://"+upstreamAddr,
		"TOKEN_URL="+tokenURL,
		"LISTEN_ADDR="+listen,
		"ADMIN_ADDR="+admin,
		"LOG_LEVEL=warn",
	)
	env = append(env, extra...)
	proc, err := b.procs.start(name, env, bin)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, proc, "http://"+admin+"/readyz", nil, http.StatusOK, startTimeout); err != nil {
		return nil, err
	}
	return &target{name: name, baseURL: "http://" + listen, proc: proc, adminURL: "http://" + admin}, nil
}

// load runs every point: for each connection count, opts.rounds times
// each body and each target in turn, a warm-up run and then a measured
// one. Rounds of one point are merged by mergeRounds.
func (b *bench) load(ctx context.Context, opts options) ([]point, error) {
	var points []point
	for _, conns := range opts.conns {
		rounds := map[string][]point{}
		for range opts.rounds {
			for _, body := range bodies {
				for _, t := range b.targets {
					p, err := b.measure(ctx, opts, t, body.name, body.path, conns)
					if err != nil {
						return nil, err
					}
					key := t.name + " " + body.name
					rounds[key] = append(rounds[key], p)
				}
			}
		}
		for _, body := range bodies {
			for _, t := range b.targets {
				points = append(points, mergeRounds(rounds[t.name+" "+body.name]))
			}
		}
	}
	return points, nil
}

// mergeRounds combines the rounds of one point. Requests, bytes, errors,
// durations and CPU times add up, so throughput is the mean over all
// rounds. Each latency percentile is the median of the rounds' values, so
// that one round disturbed by other work on the machine does not decide it.
func mergeRounds(rounds []point) point {
	merged := rounds[0]
	if len(rounds) == 1 {
		return merged
	}
	r := &merged.result
	for _, p := range rounds[1:] {
		o := p.result
		r.Requests += o.Requests
		r.Duration += o.Duration
		r.Bytes += o.Bytes
		r.ConnectErrors += o.ConnectErrors
		r.ReadErrors += o.ReadErrors
		r.WriteErrors += o.WriteErrors
		r.StatusErrors += o.StatusErrors
		r.Timeouts += o.Timeouts
		r.Max = max(r.Max, o.Max)
		if merged.cpuSeconds >= 0 {
			merged.cpuSeconds += p.cpuSeconds
		}
		merged.upstreamCPUSeconds += p.upstreamCPUSeconds
	}
	median := func(get func(wrkResult) time.Duration) time.Duration {
		values := make([]time.Duration, len(rounds))
		for i, p := range rounds {
			values[i] = get(p.result)
		}
		slices.Sort(values)
		if n := len(values); n%2 == 0 {
			return (values[n/2-1] + values[n/2]) / 2
		}
		return values[len(values)/2]
	}
	r.P50 = median(func(w wrkResult) time.Duration { return w.P50 })
	r.P90 = median(func(w wrkResult) time.Duration { return w.P90 })
	r.P99 = median(func(w wrkResult) time.Duration { return w.P99 })
	r.P999 = median(func(w wrkResult) time.Duration { return w.P999 })
	return merged
}

func (b *bench) measure(ctx context.Context, opts options, t *target, body, path string, conns int) (point, error) {
	url := t.baseURL + path
	if opts.warmup > 0 {
		res, err := runWrk(ctx, b.script, url, t.header, conns, opts.warmup)
		if err != nil {
			return point{}, err
		}
		if err := res.check(); err != nil {
			return point{}, fmt.Errorf("%s, %s body, %d connections, warm-up: %w", t.name, body, conns, err)
		}
	}

	before, err := b.cpu(t)
	if err != nil {
		return point{}, err
	}
	upstreamBefore, err := cpuSeconds(b.upstream.pid())
	if err != nil {
		return point{}, err
	}
	res, err := runWrk(ctx, b.script, url, t.header, conns, opts.duration)
	if err != nil {
		return point{}, err
	}
	after, err := b.cpu(t)
	if err != nil {
		return point{}, err
	}
	upstreamAfter, err := cpuSeconds(b.upstream.pid())
	if err != nil {
		return point{}, err
	}

	if err := res.check(); err != nil {
		return point{}, fmt.Errorf("%s, %s body, %d connections: %w", t.name, body, conns, err)
	}
	cpu := -1.0
	if t.proc != nil {
		if err := t.proc.exited(); err != nil {
			return point{}, err
		}
		cpu = after - before
	}
	progress("%-16s %-5s c=%-3d %8.0f req/s  p50 %-8v p99 %-8v p99.9 %v",
		t.name, body, conns, res.RequestsPerSecond(), res.P50, res.P99, res.P999)
	return point{
		target:             t.name,
		body:               body,
		conns:              conns,
		result:             res,
		cpuSeconds:         cpu,
		upstreamCPUSeconds: upstreamAfter - upstreamBefore,
	}, nil
}

// cpu returns the CPU seconds used so far by the target's proxy, or 0 for
// the direct path.
func (b *bench) cpu(t *target) (float64, error) {
	switch {
	case t.proc == nil:
		return 0, nil
	case t.withChildren:
		return treeCPUSeconds(t.proc.pid())
	default:
		return cpuSeconds(t.proc.pid())
	}
}

// memory returns the RSS and peak RSS of the target's proxy in KiB.
func (b *bench) memory(t *target) (rss, hwm int64, err error) {
	if t.withChildren {
		return treeMemoryKiB(t.proc.pid())
	}
	return memoryKiB(t.proc.pid())
}

// baseEnv returns the environment for child processes: PATH and HOME from
// the harness, nothing else, so that proxy settings and GOMAXPROCS from
// the caller's shell cannot change the measurement.
func baseEnv() []string {
	env := []string{"PATH=" + os.Getenv("PATH")}
	if home := os.Getenv("HOME"); home != "" {
		env = append(env, "HOME="+home)
	}
	return env
}

// randomSecret returns a client secret for this run only.
func randomSecret() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// machine describes the host for the report.
type machine struct {
	cores     int
	memory    string
	goVersion string
	nginx     string
	wrk       string
	kernel    string
	cpuModel  string
	// loadBefore and loadAfter are the 1, 5 and 15 minute load averages
	// before and after the load.
	loadBefore, loadAfter string
}

func describeMachine() (machine, error) {
	m := machine{cores: runtime.NumCPU(), goVersion: runtime.Version()}

	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kib, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				m.memory = fmt.Sprintf("%.1f GiB", float64(kib)/(1<<20))
			}
		}
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpuModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(data))
	}

	nginx, err := nginxPath()
	if err != nil {
		return m, err
	}
	// nginx -v prints to stderr and wrk -v exits with status 1, so only
	// the output matters.
	out, _ := exec.Command(nginx, "-v").CombinedOutput()
	m.nginx = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version:"))
	out, _ = exec.Command("wrk", "-v").CombinedOutput()
	m.wrk, _, _ = strings.Cut(strings.TrimSpace(string(out)), " Copyright")
	return m, nil
}

// loadAverage returns the first three fields of /proc/loadavg, or "" when
// it cannot be read.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	fields := strings.Fields(string(data))
	if len(fields) < 3 {
		return ""
	}
	return strings.Join(fields[:3], " ")
}
