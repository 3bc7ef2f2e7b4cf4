package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseWrkOutput(t *testing.T) {
	out := `Running 2s test @ http://127.0.0.1:1234/bench/small
  2 threads and 64 connections
Requests/sec:  12345.67
BENCH requests=24691 duration_us=2000123 bytes=9876543 connect=0 read=1 write=0 status=3 timeout=0 p50=1200 p90=2500 p99=4000 p999=9000 max=15000
`
	got, err := parseWrkOutput(out)
	if err != nil {
		t.Fatalf("parseWrkOutput: %v", err)
	}
	want := wrkResult{
		Requests: 24691, Duration: 2000123 * time.Microsecond, Bytes: 9876543,
		ReadErrors: 1, StatusErrors: 3,
		P50: 1200 * time.Microsecond, P90: 2500 * time.Microsecond, P99: 4 * time.Millisecond,
		P999: 9 * time.Millisecond, Max: 15 * time.Millisecond,
	}
	if got != want {
		t.Errorf("parseWrkOutput got %+v; want %+v", got, want)
	}
	if err := got.check(); err == nil || !strings.Contains(err.Error(), "3 responses with status 400 or more") {
		t.Errorf("check got %v; want an error naming 3 status errors", err)
	}
}

func TestParseWrkOutputErrors(t *testing.T) {
	tests := []struct {
		name, out, want string
	}{
		{"no summary", "Requests/sec: 1\n", "no BENCH summary line"},
		{"missing field", "BENCH requests=1\n", "field duration_us missing"},
		{"bad value", "BENCH requests=x\n", `invalid value in field "requests=x"`},
		{"bad field", "BENCH requests\n", `invalid field "requests"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseWrkOutput(tt.out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("parseWrkOutput(%q) error got %v; want one containing %q", tt.out, err, tt.want)
			}
		})
	}
}

func TestWrkResultCheckClean(t *testing.T) {
	if err := (wrkResult{Requests: 10}).check(); err != nil {
		t.Errorf("check got %v; want nil", err)
	}
	if err := (wrkResult{}).check(); err == nil {
		t.Error("check of a run without requests got nil; want an error")
	}
}

func TestStatFields(t *testing.T) {
	// The command name may contain spaces and parentheses.
	line := "1234 (nginx: (worker) x) S 1200 1234 1234 0 -1 4194624 100 0 0 0 250 75 0 0 20 0 1 0 100 1000 200\n"
	fields, err := statFields([]byte(line))
	if err != nil {
		t.Fatalf("statFields: %v", err)
	}
	if got := fields[1]; got != "1200" {
		t.Errorf("ppid got %s; want 1200", got)
	}
	if got := fields[11] + " " + fields[12]; got != "250 75" {
		t.Errorf("utime and stime got %s; want 250 75", got)
	}
	if _, err := statFields([]byte("1234 nginx S 1")); err == nil {
		t.Error("statFields without parentheses got nil error; want one")
	}
}

func TestCPUSecondsOwnProcess(t *testing.T) {
	got, err := cpuSeconds(os.Getpid())
	if err != nil {
		t.Fatalf("cpuSeconds: %v", err)
	}
	if got < 0 {
		t.Errorf("cpuSeconds got %v; want at least 0", got)
	}
}

func TestParseStatusMemory(t *testing.T) {
	status := "Name:\tauthproxy\nVmPeak:\t 1000 kB\nVmHWM:\t   24576 kB\nVmRSS:\t   12288 kB\nThreads:\t5\n"
	rss, hwm, err := parseStatusMemory(status)
	if err != nil {
		t.Fatalf("parseStatusMemory: %v", err)
	}
	if rss != 12288 {
		t.Errorf("VmRSS got %d; want 12288", rss)
	}
	if hwm != 24576 {
		t.Errorf("VmHWM got %d; want 24576", hwm)
	}
	if _, _, err := parseStatusMemory("Name:\tx\nVmRSS:\t1 kB\n"); err == nil {
		t.Error("parseStatusMemory without VmHWM got nil error; want one")
	}
}

func TestParseCounters(t *testing.T) {
	text := `# HELP authproxy_token_fetches_total Token requests.
# TYPE authproxy_token_fetches_total counter
authproxy_token_fetches_total{error_code="",outcome="success"} 7
authproxy_token_fetches_total{error_code="timeout",outcome="failure"} 2
authproxy_replays_total{result="not_replayable"} 1
authproxy_replays_total{result="replayed"} 3
authproxy_requests_total{code="200",method="get"} 1000
authproxy_requests_total{code="499",method="get"} 64
authproxy_requests_total{code="502",method="get"} 5
authproxy_requests_total{code="403",method="get"} 1
`
	got := parseCounters(text)
	want := sidecarCounters{fetchSuccess: 7, fetchFailure: 2, replays: 4, errorResponses: 6}
	if got != want {
		t.Errorf("parseCounters got %+v; want %+v", got, want)
	}
}

func TestParseOptions(t *testing.T) {
	tests := []struct {
		name         string
		args         []string
		wantDuration time.Duration
		wantWarmup   time.Duration
		wantConns    int
	}{
		{"defaults", nil, 10 * time.Second, 2 * time.Second, 4},
		{"quick", []string{"-quick"}, 2 * time.Second, time.Second, 4},
		{"quick with duration", []string{"-quick", "-duration", "5s", "-conns", "64"}, 5 * time.Second, time.Second, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := parseOptions(tt.args, io.Discard)
			if err != nil {
				t.Fatalf("parseOptions(%q): %v", tt.args, err)
			}
			if opts.duration != tt.wantDuration {
				t.Errorf("duration got %v; want %v", opts.duration, tt.wantDuration)
			}
			if opts.warmup != tt.wantWarmup {
				t.Errorf("warmup got %v; want %v", opts.warmup, tt.wantWarmup)
			}
			if len(opts.conns) != tt.wantConns {
				t.Errorf("connection counts got %v; want %d of them", opts.conns, tt.wantConns)
			}
		})
	}
	for _, args := range [][]string{{"-conns", "1,x"}, {"-conns", "0"}, {"-duration", "500ms"}, {"extra"}} {
		if _, err := parseOptions(args, io.Discard); err == nil {
			t.Errorf("parseOptions(%q) got nil error; want one", args)
		}
	}
}

func TestUpstreamHandler(t *testing.T) {
	srv := httptest.NewServer(upstreamHandler())
	t.Cleanup(srv.Close)
	tests := []struct {
		name       string
		path, auth string
		wantStatus int
		wantLen    int
	}{
		{"small", smallPath, "Bearer x", http.StatusOK, len(smallBody)},
		{"large", largePath, "Bearer x", http.StatusOK, largeSize},
		{"no credential", smallPath, "", http.StatusUnauthorized, -1},
		{"empty bearer", smallPath, "Bearer ", http.StatusUnauthorized, -1},
		{"basic", smallPath, "Basic eDp5", http.StatusUnauthorized, -1},
		{"unknown path", "/other", "Bearer x", http.StatusNotFound, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status got %d; want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.wantLen >= 0 && len(body) != tt.wantLen {
				t.Errorf("body length got %d; want %d", len(body), tt.wantLen)
			}
		})
	}
}

func TestSmallBodySize(t *testing.T) {
	if n := len(smallBody); n < 150 || n > 250 {
		t.Errorf("small body got %d bytes; want about 200", n)
	}
}

// reportWith returns a report with one small-body point per target at
// targetConns connections.
func reportWith(direct, nginx, long, expiring wrkResult) *report {
	r := &report{
		opts: options{conns: []int{targetConns}},
		memory: map[string]memoryUse{
			targetLong:     {idleKiB: 12 << 10, peakKiB: 30 << 10},
			targetExpiring: {idleKiB: 12 << 10, peakKiB: 70 << 10},
		},
	}
	for name, res := range map[string]wrkResult{targetDirect: direct, targetNginx: nginx, targetLong: long, targetExpiring: expiring} {
		r.points = append(r.points, point{target: name, body: "small", conns: targetConns, result: res, cpuSeconds: 1})
	}
	return r
}

func TestReportTargets(t *testing.T) {
	ms := time.Millisecond
	direct := wrkResult{Requests: 30000, Duration: time.Second, P99: 2 * ms, P999: 3 * ms}
	nginx := wrkResult{Requests: 20000, Duration: time.Second, P99: 4 * ms, P999: 5 * ms}
	long := wrkResult{Requests: 21000, Duration: time.Second, P99: 3 * ms, P999: 4 * ms}
	// 85% of the long lifetime's throughput and a p99.9 spike.
	expiring := wrkResult{Requests: 17850, Duration: time.Second, P99: 3 * ms, P999: 20 * ms}
	r := reportWith(direct, nginx, long, expiring)
	r.evaluate()

	want := map[string]bool{
		"throughput at 64 connections": true,
		"added p99 at 64 connections":  true,
		"no throughput dip":            false,
		"no p99.9 spike":               false,
		"sidecar-long peak RSS":        true,
		"sidecar-long idle RSS":        true,
		"sidecar-expiring peak RSS":    false,
		"sidecar-expiring idle RSS":    true,
	}
	if len(r.checks) != len(want) {
		t.Fatalf("evaluate got %d checks; want %d", len(r.checks), len(want))
	}

	for _, c := range r.checks {
		found := false
		for prefix, met := range want {
			if strings.HasPrefix(c.name, prefix) {
				found = true
				if c.met != met {
					t.Errorf("check %q met got %v; want %v (measured %s)", c.name, c.met, met, c.measured)
				}
			}
		}
		if !found {
			t.Errorf("unexpected check %q", c.name)
		}
	}
	if got := r.missedTargets(); got != 3 {
		t.Errorf("missedTargets got %d; want 3", got)
	}
}

func TestReportCheckCounters(t *testing.T) {
	r := &report{counters: map[string]sidecarCounters{
		targetLong:     {},
		targetExpiring: {fetchSuccess: 5},
	}}
	if err := r.checkCounters(); err != nil {
		t.Errorf("checkCounters got %v; want nil", err)
	}
	r.counters[targetExpiring] = sidecarCounters{}
	if err := r.checkCounters(); err == nil || !strings.Contains(err.Error(), "fetched no token") {
		t.Errorf("checkCounters without fetches got %v; want an error saying no token was fetched", err)
	}
	r.counters[targetLong] = sidecarCounters{replays: 1, errorResponses: 2}
	r.counters[targetExpiring] = sidecarCounters{fetchSuccess: 1}
	err := r.checkCounters()
	if err == nil || !strings.Contains(err.Error(), "401 1 times") || !strings.Contains(err.Error(), "2 responses") {
		t.Errorf("checkCounters got %v; want errors for the replay and the error responses", err)
	}
}

func TestMarkdownContainsEveryPoint(t *testing.T) {
	ms := time.Millisecond
	res := wrkResult{Requests: 1000, Duration: time.Second, P50: ms, P99: 2 * ms, P999: 3 * ms}
	r := reportWith(res, res, res, res)
	text := r.markdown()
	for _, want := range []string{"| 64 | direct | 1000 |", "| 64 | nginx | 1000 |", "| 64 | sidecar-long |", "| 64 | sidecar-expiring |", "### Targets"} {
		if !strings.Contains(text, want) {
			t.Errorf("markdown lacks %q:\n%s", want, text)
		}
	}
}

func TestMergeRounds(t *testing.T) {
	ms := time.Millisecond
	round := func(requests int64, p99 time.Duration, cpu float64) point {
		return point{
			result:             wrkResult{Requests: requests, Duration: time.Second, P50: ms, P99: p99, P999: 2 * p99, Max: p99 * 3},
			cpuSeconds:         cpu,
			upstreamCPUSeconds: cpu / 2,
		}
	}
	got := mergeRounds([]point{round(1000, 5*ms, 1), round(3000, 100*ms, 2), round(2000, 7*ms, 3)})
	if got.result.Requests != 6000 || got.result.Duration != 3*time.Second {
		t.Errorf("requests and duration got %d in %v; want 6000 in 3s", got.result.Requests, got.result.Duration)
	}
	if got.result.P99 != 7*ms {
		t.Errorf("p99 got %v; want the median 7ms", got.result.P99)
	}
	if got.result.P999 != 14*ms {
		t.Errorf("p99.9 got %v; want the median 14ms", got.result.P999)
	}
	if got.result.Max != 300*ms {
		t.Errorf("max got %v; want 300ms", got.result.Max)
	}
	if got.cpuSeconds != 6 || got.upstreamCPUSeconds != 3 {
		t.Errorf("CPU got %v and upstream %v; want 6 and 3", got.cpuSeconds, got.upstreamCPUSeconds)
	}
	direct := mergeRounds([]point{{cpuSeconds: -1}, {cpuSeconds: -1}})
	if direct.cpuSeconds != -1 {
		t.Errorf("direct path CPU got %v; want -1", direct.cpuSeconds)
	}
}
