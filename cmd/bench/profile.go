package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authproxy/authproxy/metrics"
	"github.com/authproxy/authproxy/proxy"
	"github.com/authproxy/authproxy/tokencache"
)

// runProfile serves the sidecar's handler in this process, built from the
// same packages with the default settings. It loads the handler with wrk
// at each connection count of opts.conns for each body, and writes a CPU,
// an in-use heap and an allocation profile per point into opts.profile. The sidecar binary itself
// has no profiling endpoint.
func runProfile(ctx context.Context, opts options) error {
	if _, err := exec.LookPath("wrk"); err != nil {
		return errors.New("wrk not found; install with apt-get install -y --no-install-recommends wrk, or run scripts/bench.sh, which does")
	}
	if err := os.MkdirAll(opts.profile, 0o755); err != nil {
		return fmt.Errorf("create profile directory: %w", err)
	}
	b := &bench{}
	defer b.procs.stopAll()
	dir, err := os.MkdirTemp("", "authproxy-profile-")
	if err != nil {
		return fmt.Errorf("create temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	b.dir = dir
	if b.script, err = writeWrkScript(dir); err != nil {
		return err
	}
	_, taskmasterBin, err := b.build(ctx)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the harness executable: %w", err)
	}
	upstreamPort, err := freePort()
	if err != nil {
		return err
	}
	upstreamAddr := "127.0.0.1:" + strconv.Itoa(upstreamPort)
	upstream, err := b.procs.start("upstream", baseEnv(), self, upstreamFlag, upstreamAddr)
	if err != nil {
		return err
	}
	bearer := http.Header{"Authorization": {"Bearer readiness-check"}}
	if err := waitHTTP(ctx, upstream, "http://"+upstreamAddr+smallPath, bearer, http.StatusOK, startTimeout); err != nil {
		return err
	}
	secret := randomSecret()
	tokenURL, err := b.startTaskmaster(ctx, taskmasterBin, "profile", secret, longLifetime)
	if err != nil {
		return err
	}

	handler, closeHandler, err := inProcessSidecar(upstreamAddr, tokenURL, secret)
	if err != nil {
		return err
	}
	defer closeHandler()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for the in-process sidecar: %w", err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 90 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	base := "http://" + ln.Addr().String()

	for _, conns := range opts.conns {
		for _, body := range bodies {
			if err := profileOne(ctx, opts, b.script, base+body.path, body.name, conns); err != nil {
				return err
			}
		}
	}
	return nil
}

func profileOne(ctx context.Context, opts options, script, target, body string, conns int) error {
	if opts.warmup > 0 {
		if _, err := runWrk(ctx, script, target, "", conns, opts.warmup); err != nil {
			return err
		}
	}

	suffix := fmt.Sprintf("-%s-c%d.pprof", body, conns)
	cpuPath := filepath.Join(opts.profile, "cpu"+suffix)
	cpuFile, err := os.Create(cpuPath)
	if err != nil {
		return fmt.Errorf("create CPU profile: %w", err)
	}
	defer cpuFile.Close()

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := pprof.StartCPUProfile(cpuFile); err != nil {
		return fmt.Errorf("start CPU profile: %w", err)
	}
	heapPath := filepath.Join(opts.profile, "heap"+suffix)
	heapErr := make(chan error, 1)
	go func() { heapErr <- writeHeapProfile(ctx, heapPath, opts.duration/2) }()
	res, err := runWrk(ctx, script, target, "", conns, opts.duration)
	pprof.StopCPUProfile()
	runtime.ReadMemStats(&after)
	if herr := <-heapErr; herr != nil && err == nil {
		err = herr
	}
	if err != nil {
		return err
	}
	if err := res.check(); err != nil {
		return fmt.Errorf("in-process sidecar, %s body: %w", body, err)
	}

	allocsPath := filepath.Join(opts.profile, "allocs"+suffix)
	allocsFile, err := os.Create(allocsPath)
	if err != nil {
		return fmt.Errorf("create allocation profile: %w", err)
	}
	defer allocsFile.Close()
	if err := pprof.Lookup("allocs").WriteTo(allocsFile, 0); err != nil {
		return fmt.Errorf("write allocation profile: %w", err)
	}

	perRequest := func(n uint64) float64 { return float64(n) / float64(res.Requests) }
	fmt.Printf("in-process sidecar, %s body, %d connections: %.0f req/s, p50 %s, p99 %s, %.1f allocations and %.0f bytes per request (whole process)\n",
		body, conns, res.RequestsPerSecond(), millis(res.P50), millis(res.P99),
		perRequest(after.Mallocs-before.Mallocs), perRequest(after.TotalAlloc-before.TotalAlloc))
	fmt.Printf("  profiles: %s %s %s (allocation samples are cumulative from process start)\n", cpuPath, heapPath, allocsPath)
	return nil
}

// writeHeapProfile waits for after, then collects garbage and writes the
// in-use heap profile to path, so that the profile shows the memory held
// while the load runs.
func writeHeapProfile(ctx context.Context, path string, after time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(after):
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create heap profile: %w", err)
	}
	runtime.GC()
	err = pprof.Lookup("heap").WriteTo(f, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write heap profile %s: %w", path, err)
	}
	return nil
}

// inProcessSidecar builds the proxy handler with the sidecar's default
// settings and a token cache that fetches from tokenURL.
func inProcessSidecar(upstreamAddr, tokenURL, secret string) (http.Handler, func(), error) {
	upstream, err := url.Parse("http://" + upstreamAddr)
	if err != nil {
		return nil, nil, err
	}
	m := metrics.New(prometheus.NewRegistry(), "bench")
	cache, err := tokencache.New(tokencache.Config{
		Fetcher: &tokencache.ClientCredentials{
			TokenURL: tokenURL,
			ClientID: "bench",
			Secret:   tokencache.StaticSecret(secret),
		},
		Observer: m,
	})
	if err != nil {
		return nil, nil, err
	}
	transport, err := proxy.NewTransport(proxy.TransportConfig{ResponseHeaderTimeout: 60 * time.Second})
	if err != nil {
		return nil, nil, err
	}
	px, err := proxy.New(proxy.Config{Upstream: upstream, Tokens: cache, Transport: transport, Metrics: m})
	if err != nil {
		return nil, nil, err
	}

	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		cache.Run(runCtx)
		close(done)
	}()
	cleanup := func() {
		stop()
		<-done
		cache.Close()
		transport.CloseIdleConnections()
	}

	tokenCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cache.Token(tokenCtx); err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("first token from %s: %w", tokenURL, err)
	}
	return px, cleanup, nil
}
