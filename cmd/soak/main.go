// Command soak runs the authproxy binary against an in-process Taskmaster
// server that issues short-lived tokens and sends steady concurrent load
// through it for a fixed time. It reports the requests, the failures by
// kind and the token requests. It also reports the sidecar's resident
// memory (RSS) and goroutine count after the warm-up and at the end.
//
// Usage:
//
//	go run ./cmd/soak -duration 30s [-workers 32] [-token-lifetime 2s]
//
// It exits 1 when any request fails, when the token requests exceed what
// the token lifetime explains, when the sidecar's RSS or goroutine count
// grows beyond the tolerances, or when the sidecar does not exit 0 after
// SIGTERM. It exits 2 on bad flags or when the run cannot start. Every
// server it starts listens on 127.0.0.1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/authproxy/authproxy/internal/taskmaster"
)

const (
	clientID     = "soak-client"
	clientSecret = "soak-secret-4f1c9b7e"
)

// options contains the parsed command line.
type options struct {
	duration           time.Duration
	warmup             time.Duration
	workers            int
	tokenLifetime      time.Duration
	binary             string
	maxRequests        int64
	maxRSSGrowthMiB    float64
	maxGoroutineGrowth int
}

func main() {
	opts, err := parseOptions(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		os.Exit(2)
	}
	os.Exit(run(opts, os.Stdout, os.Stderr))
}

func parseOptions(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "time the load runs, warm-up included")
	fs.DurationVar(&o.warmup, "warmup", 0, "load time before the start sample of RSS and goroutines; default: 10% of -duration, at least 2s")
	fs.IntVar(&o.workers, "workers", 32, "concurrent clients, each sending one request after another")
	fs.DurationVar(&o.tokenLifetime, "token-lifetime", 2*time.Second, "lifetime of the tokens Taskmaster issues")
	fs.StringVar(&o.binary, "binary", "", "authproxy binary to run; default: build the module's main package into a temporary folder")
	fs.Int64Var(&o.maxRequests, "max-requests", 100_000_000, "stop the load after this many requests even if -duration has not passed")
	fs.Float64Var(&o.maxRSSGrowthMiB, "max-rss-growth-mib", 32, "largest accepted growth of the sidecar's RSS between the start and end samples, in MiB")
	fs.IntVar(&o.maxGoroutineGrowth, "max-goroutine-growth", 64, "largest accepted growth of the sidecar's go_goroutines between the start and end samples")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q; run soak -help", fs.Arg(0))
	}
	if o.warmup == 0 {
		o.warmup = max(o.duration/10, 2*time.Second)
	}
	switch {
	case o.duration <= 0:
		return o, fmt.Errorf("-duration %v is not positive; use a duration such as 30s", o.duration)
	case o.warmup >= o.duration:
		return o, fmt.Errorf("-warmup %v must be shorter than -duration %v", o.warmup, o.duration)
	case o.workers < 1:
		return o, fmt.Errorf("-workers %d is less than 1", o.workers)
	case o.tokenLifetime < time.Second:
		return o, fmt.Errorf("-token-lifetime %v is under 1s, which Taskmaster cannot express in expires_in", o.tokenLifetime)
	}
	return o, nil
}

// sample is one measurement of the sidecar process.
type sample struct {
	rssBytes   int64
	goroutines int
}

// result counts the outcomes of the load.
type result struct {
	requests atomic.Int64
	// mu guards failures.
	mu       sync.Mutex
	failures map[string]int64
}

func (r *result) fail(kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures[kind]++
}

func (r *result) failureCount() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for _, c := range r.failures {
		n += c
	}
	return n
}

func run(o options, stdout, stderr io.Writer) int {
	dir, err := os.MkdirTemp("", "authproxy-soak-")
	if err != nil {
		fmt.Fprintf(stderr, "soak: create temporary folder: %v\n", err)
		return 2
	}
	defer os.RemoveAll(dir)
	if o.binary == "" {
		o.binary = filepath.Join(dir, "authproxy")
		build := exec.Command("go", "build", "-o", o.binary, "github.com/authproxy/authproxy")
		build.Stdout, build.Stderr = stderr, stderr
		if err := build.Run(); err != nil {
			fmt.Fprintf(stderr, "soak: build the sidecar: %v\n", err)
			return 2
		}
	}

	tm := taskmaster.New(taskmaster.Config{
		Clients:       map[string]string{clientID: clientSecret},
		TokenLifetime: o.tokenLifetime,
	})
	tmLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintf(stderr, "soak: listen for Taskmaster: %v\n", err)
		return 2
	}
	tmSrv := &http.Server{Handler: tm, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = tmSrv.Serve(tmLn) }()
	defer tmSrv.Close()

	sc, err := startSidecar(o.binary, "http://"+tmLn.Addr().String(), filepath.Join(dir, "sidecar.log"))
	if err != nil {
		fmt.Fprintf(stderr, "soak: %v\n", err)
		return 2
	}
	defer sc.kill()

	res := &result{failures: map[string]int64{}}
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        o.workers,
			MaxIdleConnsPerHost: o.workers,
			IdleConnTimeout:     30 * time.Second,
		},
	}
	defer client.CloseIdleConnections()
	target := "http://" + sc.proxyAddr + "/api/tasks"
	tokensBefore := tm.TokenRequests()
	started := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), o.duration)
	defer cancel()
	var wg sync.WaitGroup
	for range o.workers {
		wg.Go(func() { load(ctx, client, target, o.maxRequests, res) })
	}

	var first, last sample
	var sampleErr error
	select {
	case <-time.After(o.warmup):
		first, sampleErr = sc.sample()
	case <-ctx.Done():
	}
	<-ctx.Done()
	if sampleErr == nil {
		last, sampleErr = sc.sample()
	}
	wg.Wait()
	elapsed := time.Since(started)
	tokenRequests := tm.TokenRequests() - tokensBefore
	exitCode, exitErr := sc.stop(10 * time.Second)

	rep := report{
		opts: o, elapsed: elapsed, res: res, tokenRequests: tokenRequests,
		first: first, last: last, sampleErr: sampleErr,
		exitCode: exitCode, exitErr: exitErr, logTail: sc.tail(20),
	}
	return rep.print(stdout)
}

// load sends GET requests one after another until ctx ends or the shared
// request budget is spent.
func load(ctx context.Context, client *http.Client, target string, budget int64, res *result) {
	for ctx.Err() == nil {
		if res.requests.Add(1) > budget {
			res.requests.Add(-1)
			return
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			res.fail("build request: " + err.Error())
			return
		}
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				// The run ended while this request was in flight; it
				// was cut off by the soak, not by the sidecar.
				res.requests.Add(-1)
				return
			}
			res.fail(errorKind(err))
			continue
		}
		_, copyErr := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch {
		case copyErr != nil && ctx.Err() != nil:
			res.requests.Add(-1)
			return
		case copyErr != nil:
			res.fail("read body: " + errorKind(copyErr))
		case resp.StatusCode != http.StatusOK:
			res.fail("status " + strconv.Itoa(resp.StatusCode))
		}
	}
}

// errorKind shortens a client error to a stable label without addresses
// or ports.
func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected EOF"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other: " + err.Error()
}

// report is the outcome of one soak run.
type report struct {
	opts          options
	elapsed       time.Duration
	res           *result
	tokenRequests int64
	first, last   sample
	sampleErr     error
	exitCode      int
	exitErr       error
	logTail       string
}

// print writes the report and returns the exit code: 0 when every check
// passed.
func (r report) print(w io.Writer) int {
	o := r.opts
	requests := r.res.requests.Load()
	failed := r.res.failureCount()
	fmt.Fprintf(w, "soak: %d workers for %v against Taskmaster with %v tokens\n", o.workers, r.elapsed.Round(time.Millisecond), o.tokenLifetime)
	fmt.Fprintf(w, "requests: %d (%.0f per second), failed: %d\n", requests, float64(requests)/r.elapsed.Seconds(), failed)
	kinds := make([]string, 0, len(r.res.failures))
	for k := range r.res.failures {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(w, "  %s: %d\n", k, r.res.failures[k])
	}

	// With a lifetime of a few seconds the cache refreshes a token at half
	// its life, because the refresh margin is capped at half the lifetime.
	// That makes about two token requests per lifetime, and the ceiling
	// accepts twice as many.
	maxTokens := int64(4*r.elapsed/o.tokenLifetime) + 5
	fmt.Fprintf(w, "token requests: %d (at most %d accepted)\n", r.tokenRequests, maxTokens)

	var problems []string
	if failed > 0 {
		problems = append(problems, fmt.Sprintf("%d requests failed", failed))
	}
	if requests == 0 {
		problems = append(problems, "no request was sent")
	}
	if r.tokenRequests > maxTokens {
		problems = append(problems, fmt.Sprintf("%d token requests exceed %d", r.tokenRequests, maxTokens))
	}
	if r.sampleErr != nil {
		problems = append(problems, "cannot sample the sidecar: "+r.sampleErr.Error())
	} else {
		rssGrowth := float64(r.last.rssBytes-r.first.rssBytes) / (1 << 20)
		goroutineGrowth := r.last.goroutines - r.first.goroutines
		fmt.Fprintf(w, "sidecar RSS: %.1f MiB after %v of load, %.1f MiB at the end (growth %+.1f MiB, at most %.0f accepted)\n",
			float64(r.first.rssBytes)/(1<<20), o.warmup, float64(r.last.rssBytes)/(1<<20), rssGrowth, o.maxRSSGrowthMiB)
		fmt.Fprintf(w, "sidecar goroutines: %d after %v of load, %d at the end (growth %+d, at most %d accepted)\n",
			r.first.goroutines, o.warmup, r.last.goroutines, goroutineGrowth, o.maxGoroutineGrowth)
		if rssGrowth > o.maxRSSGrowthMiB {
			problems = append(problems, fmt.Sprintf("RSS grew by %.1f MiB", rssGrowth))
		}
		if goroutineGrowth > o.maxGoroutineGrowth {
			problems = append(problems, fmt.Sprintf("goroutines grew by %d", goroutineGrowth))
		}
	}
	switch {
	case r.exitErr != nil:
		problems = append(problems, "sidecar did not stop: "+r.exitErr.Error())
	case r.exitCode != 0:
		problems = append(problems, fmt.Sprintf("sidecar exited with code %d after SIGTERM", r.exitCode))
	default:
		fmt.Fprintln(w, "sidecar exit after SIGTERM: 0")
	}
	if len(problems) > 0 {
		fmt.Fprintf(w, "FAIL: %s\nlast lines of the sidecar log:\n%s", strings.Join(problems, "; "), r.logTail)
		return 1
	}
	fmt.Fprintln(w, "PASS")
	return 0
}
