// Command authproxy is an authenticating reverse-proxy sidecar. It obtains
// an OAuth2 access token with the client-credentials grant, keeps it fresh,
// and forwards local requests to one upstream with that token as a Bearer
// credential. Run it with -help for its configuration.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/authproxy/authproxy/metrics"
	"github.com/authproxy/authproxy/proxy"
	"github.com/authproxy/authproxy/tokencache"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// secretPollInterval is how often CLIENT_SECRET_FILE is checked for changes.
const secretPollInterval = 5 * time.Second

func main() {
	os.Exit(run(os.Args[1:], environ(), os.Stdout, os.Stderr))
}

// environ returns the process environment as a map.
func environ() map[string]string {
	m := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// run is main without os.Exit, so tests can drive it. It returns the exit
// code: 0 after a clean shutdown, 2 for bad configuration, 1 for other
// startup failures.
func run(args []string, env map[string]string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "-help", "--help", "-h", "help":
			printHelp(stdout)
			return 0
		case "-version", "--version", "version":
			fmt.Fprintln(stdout, version)
			return 0
		case "healthcheck":
			return healthcheck(env, stderr)
		default:
			fmt.Fprintf(stderr, "authproxy: unknown argument %q; run authproxy -help\n", args[0])
			return 2
		}
	}
	cfg, errs := loadConfig(env)
	if len(errs) > 0 {
		fmt.Fprintf(stderr, "authproxy: invalid configuration (%d problems):\n", len(errs))
		for _, err := range errs {
			fmt.Fprintf(stderr, "  - %v\n", err)
		}
		fmt.Fprintln(stderr, "Run authproxy -help for every variable and its default.")
		return 2
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "authproxy: %v\n", err)
		return 2
	}
	defer func() { _ = log.Sync() }()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil && ctx.Err() == nil {
		log.Error("sidecar stopped", zap.Error(err))
		return 1
	}
	return 0
}

// newLogger builds the zap logger: JSON by default, no stack traces, and
// sampling so that a burst of identical messages cannot flood the log.
func newLogger(cfg *Config, out io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, fmt.Errorf("LOG_LEVEL: %w", err)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	encCfg.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	if cfg.LogFormat == "console" {
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(out)), level)
	core = zapcore.NewSamplerWithOptions(core, time.Second, 100, 100)
	return zap.New(core), nil
}

// serve runs the sidecar until ctx ends, then shuts down gracefully. Both
// ports open first: until the token cache and proxy exist, which with
// ISSUER_URL waits for the issuer's metadata, /healthz returns 200, /readyz
// reports "starting" and proxied requests get 503.
func serve(ctx context.Context, cfg *Config, log *zap.Logger) error {
	// Catch SIGHUP from the start: its default action would end the
	// process while it is still starting.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, version)
	proxyLn, adminLn, err := listen(cfg)
	if err != nil {
		return err
	}
	serverLog, err := zap.NewStdLogAt(log.Named("http"), zap.WarnLevel)
	if err != nil {
		return err
	}
	adm := &admin{}
	handler := &switchHandler{}
	handler.set(m.InstrumentHandler(proxy.Starting()))
	// NOTE: there is no ReadTimeout, because it would cut off long uploads
	// and streams. A client that stalls in the middle of a request body
	// holds its upstream request open until the client goes away.
	proxySrv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          serverLog,
	}
	adminSrv := &http.Server{
		Handler:           adm.handler(reg, log),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       cfg.IdleTimeout,
		ErrorLog:          serverLog,
	}
	logStart(log, cfg, proxyLn.Addr(), adminLn.Addr())
	serveErr := make(chan error, 2)
	go func() { serveErr <- serveListener(proxySrv, proxyLn) }()
	go func() { serveErr <- serveListener(adminSrv, adminLn) }()

	var wg sync.WaitGroup
	background, cancelBackground := context.WithCancel(context.Background())
	defer func() {
		cancelBackground()
		wg.Wait()
	}()
	cache, px, secretFile, cleanup, err := build(ctx, cfg, log, m)
	if err != nil {
		shutdown(log, cfg, adm, proxySrv, adminSrv)
		return err
	}
	defer cleanup()
	wg.Go(func() { cache.Run(background) })
	if secretFile != nil {
		wg.Go(func() { secretFile.Watch(background, secretPollInterval, cache.CredentialsChanged) })
	}
	wg.Go(func() { watchHangup(background, hup, log, secretFile, cache) })
	adm.cache.Store(cache)
	handler.set(px)

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return err
	}
	shutdown(log, cfg, adm, proxySrv, adminSrv)
	return nil
}

// listen opens the proxy and admin listeners, so that a port in use is
// reported before anything else starts.
func listen(cfg *Config) (proxyLn, adminLn net.Listener, err error) {
	proxyLn, err = net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("LISTEN_ADDR: %w; stop the process using that port or choose another", err)
	}
	adminLn, err = net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		proxyLn.Close()
		return nil, nil, fmt.Errorf("ADMIN_ADDR: %w; stop the process using that port or choose another", err)
	}
	return proxyLn, adminLn, nil
}

// build creates the token cache and the proxy handler. cleanup closes the
// cache and the upstream connections.
func build(ctx context.Context, cfg *Config, log *zap.Logger, m *metrics.Metrics) (
	cache *tokencache.Cache, px http.Handler, secretFile *tokencache.SecretFile, cleanup func(), err error,
) {
	fetcher, secretFile, err := newFetcher(ctx, cfg, log)
	if err != nil {
		return nil, nil, nil, nil, err
	}

	cache, err = tokencache.New(tokencache.Config{
		Fetcher:               fetcher,
		Timeout:               cfg.TokenTimeout,
		DefaultLifetime:       cfg.TokenDefaultLifetime,
		RefreshRatio:          cfg.TokenRefreshRatio,
		RefreshMinMargin:      cfg.TokenRefreshMinMargin,
		ExpiryLeeway:          cfg.TokenExpiryLeeway,
		RetryMin:              cfg.TokenRetryMin,
		RetryMax:              cfg.TokenRetryMax,
		ForcedRefreshInterval: cfg.TokenForcedRefreshInterval,
		Logger:                log.Named("tokencache"),
		Observer:              m,
		OnCredentialError: func() {
			if secretFile != nil {
				_, _ = secretFile.Reload()
			}
		},
	})
	if err != nil {
		return nil, nil, nil, nil, err
	}

	transport, err := proxy.NewTransport(proxy.TransportConfig{
		CAFile:                cfg.CAFile,
		ResponseHeaderTimeout: cfg.UpstreamTimeout,
	})
	if err != nil {
		cache.Close()
		return nil, nil, nil, nil, fmt.Errorf("CA_FILE: %w", err)
	}
	cleanup = func() {
		cache.Close()
		transport.CloseIdleConnections()
	}

	maxReplay := cfg.MaxReplayBodyBytes
	if maxReplay == 0 {
		maxReplay = -1 // MAX_REPLAY_BODY_BYTES=0 turns body buffering off.
	}
	px, err = proxy.New(proxy.Config{
		Upstream:       cfg.upstream,
		Tokens:         cache,
		Transport:      transport,
		MaxReplayBody:  maxReplay,
		RequiredHeader: cfg.RequiredHeaderName,
		RequiredValue:  cfg.RequiredHeaderValue,
		Logger:         log.Named("proxy"),
		Metrics:        m,
	})
	if err != nil {
		cleanup()
		return nil, nil, nil, nil, err
	}
	return cache, px, secretFile, cleanup, nil
}

// switchHandler serves the handler set last. It lets the proxy port respond
// while the proxy itself is still being built.
type switchHandler struct {
	current atomic.Pointer[http.Handler]
}

func (s *switchHandler) set(h http.Handler) { s.current.Store(&h) }

func (s *switchHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.current.Load()).ServeHTTP(w, r)
}

func serveListener(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// shutdown reports not ready, waits SHUTDOWN_DELAY so that load balancers
// notice, then lets in-flight requests finish within SHUTDOWN_GRACE.
func shutdown(log *zap.Logger, cfg *Config, adm *admin, proxySrv, adminSrv *http.Server) {
	log.Info("shutting down", zap.Duration("delay", cfg.ShutdownDelay), zap.Duration("grace", cfg.ShutdownGrace))
	adm.stopping.Store(true)
	time.Sleep(cfg.ShutdownDelay)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := proxySrv.Shutdown(ctx); err != nil {
		log.Warn("in-flight requests did not finish within the grace period", zap.Error(err))
		proxySrv.Close()
	}
	adminCtx, cancelAdmin := context.WithTimeout(context.Background(), time.Second)
	defer cancelAdmin()
	_ = adminSrv.Shutdown(adminCtx)
	log.Info("stopped")
}

// watchHangup re-reads the secret file and forces one token refresh on
// SIGHUP, rate-limited like the forced refreshes after a 401.
func watchHangup(ctx context.Context, hup <-chan os.Signal, log *zap.Logger, secretFile *tokencache.SecretFile, cache *tokencache.Cache) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if secretFile != nil {
			if _, err := secretFile.Reload(); err != nil {
				log.Warn("SIGHUP: cannot re-read the client secret file", zap.Error(err))
			}
		}
		if cache.RequestRefresh() {
			log.Info("SIGHUP: refreshing the token")
		} else {
			log.Warn("SIGHUP: token refresh skipped; another forced refresh ran within TOKEN_FORCED_REFRESH_INTERVAL")
		}
	}
}

// tokenURLField names the token endpoint, or the issuer it will come from.
func tokenURLField(cfg *Config) zap.Field {
	if cfg.tokenURL == nil {
		return zap.String("issuer_url", cfg.IssuerURL)
	}
	return zap.String("token_url", cfg.tokenURL.String())
}

// logStart logs the effective configuration without any secret.
func logStart(log *zap.Logger, cfg *Config, proxyAddr, adminAddr net.Addr) {
	secretSource := "CLIENT_SECRET"
	switch {
	case cfg.authMethod == tokencache.PrivateKeyJWT:
		secretSource = "CLIENT_PRIVATE_KEY_FILE"
	case cfg.ClientSecretFile != "":
		secretSource = "CLIENT_SECRET_FILE"
	}
	log.Info("starting",
		zap.String("version", version),
		zap.String("client_id", cfg.ClientID),
		zap.String("credential_source", secretSource),
		zap.String("token_auth_method", string(cfg.authMethod)),
		tokenURLField(cfg),
		zap.String("upstream_url", cfg.upstream.String()),
		zap.Strings("scopes", cfg.scopes),
		zap.Strings("token_params", paramNames(cfg)),
		zap.Duration("token_timeout", cfg.TokenTimeout),
		zap.Duration("upstream_timeout", cfg.UpstreamTimeout),
	)
	if !isLoopbackAddr(proxyAddr) {
		log.Warn("the proxy listens on an address other hosts can reach; anyone who reaches it acts with the sidecar's credential",
			zap.Stringer("address", proxyAddr))
	}
	log.Info("listening", zap.Stringer("proxy", proxyAddr), zap.Stringer("admin", adminAddr))
}
