// Command taskmaster runs an in-memory imitation of the Taskmaster service
// for the quickstart and for local tests of the authenticating proxy. It
// issues client-credentials tokens at POST /api/auth/oauth2/token and serves
// /api/tasks and /api/projects to requests with a valid bearer token.
//
// Usage:
//
//	taskmaster -client-id ID -client-secret-file FILE [-addr 127.0.0.1:8081]
//
// The client secret comes from -client-secret, -client-secret-file or the
// TASKMASTER_CLIENT_SECRET environment variable, in that order.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/authproxy/authproxy/internal/taskmaster"
)

// secretEnvVar is the environment variable read when neither secret flag is
// set.
const secretEnvVar = "TASKMASTER_CLIENT_SECRET"

// shutdownTimeout bounds the wait for in-flight requests after a signal.
const shutdownTimeout = 5 * time.Second

// options contains the parsed command line.
type options struct {
	addr                string
	allowNonLoopback    bool
	clientID            string
	clientSecret        string
	tokenLifetime       time.Duration
	invalidClientStatus int
	control             bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr, nil)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "taskmaster: %v\n", err)
		os.Exit(1)
	}
}

// parseOptions parses and checks the command line. getenv supplies the
// environment.
func parseOptions(args []string, getenv func(string) string, output io.Writer) (options, error) {
	var (
		opts       options
		secretFile string
	)
	flags := flag.NewFlagSet("taskmaster", flag.ContinueOnError)
	flags.SetOutput(output)
	flags.StringVar(&opts.addr, "addr", "127.0.0.1:8081", "listen address, host:port; the host must be a loopback address unless -allow-non-loopback is set")
	flags.BoolVar(&opts.allowNonLoopback, "allow-non-loopback", false, "allow -addr to be a non-loopback address, which exposes the server to the network")
	flags.StringVar(&opts.clientID, "client-id", "", "client id of the registered OAuth application (required)")
	flags.StringVar(&opts.clientSecret, "client-secret", "", "client secret of the registered application; prefer -client-secret-file or "+secretEnvVar+", which other users cannot read in the process list")
	flags.StringVar(&secretFile, "client-secret-file", "", "file whose content, without trailing line breaks, is the client secret")
	flags.DurationVar(&opts.tokenLifetime, "token-lifetime", taskmaster.DefaultTokenLifetime, "lifetime of issued access tokens, e.g. 1h or 30s")
	flags.IntVar(&opts.invalidClientStatus, "invalid-client-status", http.StatusBadRequest, "HTTP status for a wrong client id or secret: 400 (as the hosted service) or 401 (as its guide)")
	flags.BoolVar(&opts.control, "control", false, "serve the unauthenticated control endpoints under /_control/")
	if err := flags.Parse(args); err != nil {
		return options{}, err
	}
	if flags.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q, all settings are flags", flags.Args())
	}

	if opts.clientID == "" {
		return options{}, errors.New("missing client id: set -client-id")
	}
	if opts.clientSecret != "" && secretFile != "" {
		return options{}, errors.New("both -client-secret and -client-secret-file are set, use one")
	}
	if secretFile != "" {
		content, err := os.ReadFile(secretFile)
		if err != nil {
			return options{}, fmt.Errorf("reading -client-secret-file failed: %w", err)
		}
		opts.clientSecret = strings.TrimRight(string(content), "\r\n")
	}
	if opts.clientSecret == "" {
		opts.clientSecret = getenv(secretEnvVar)
	}
	if opts.clientSecret == "" {
		return options{}, fmt.Errorf("missing client secret: set -client-secret-file, %s or -client-secret", secretEnvVar)
	}

	if opts.tokenLifetime <= 0 {
		return options{}, fmt.Errorf("invalid -token-lifetime %v: must be positive", opts.tokenLifetime)
	}
	if opts.invalidClientStatus != http.StatusBadRequest && opts.invalidClientStatus != http.StatusUnauthorized {
		return options{}, fmt.Errorf("invalid -invalid-client-status %d: must be 400 or 401", opts.invalidClientStatus)
	}
	if !opts.allowNonLoopback {
		if err := checkLoopback(opts.addr); err != nil {
			return options{}, err
		}
	}
	return opts, nil
}

// checkLoopback returns an error unless addr names a loopback host: an IP
// loopback address or "localhost". An empty host listens on every interface,
// so it is rejected too.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("invalid -addr %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("-addr %q is not a loopback address: use 127.0.0.1 or [::1], or set -allow-non-loopback", addr)
}

// run serves until ctx is done. When onListen is not nil, run calls it with
// the bound address once the listener is open.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, onListen func(addr string)) error {
	opts, err := parseOptions(args, getenv, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))

	server := taskmaster.New(taskmaster.Config{
		Clients:             map[string]string{opts.clientID: opts.clientSecret},
		TokenLifetime:       opts.tokenLifetime,
		InvalidClientStatus: opts.invalidClientStatus,
		EnableControl:       opts.control,
	})

	listener, err := net.Listen("tcp", opts.addr)
	if err != nil {
		return fmt.Errorf("listening on %s failed: %w", opts.addr, err)
	}
	httpServer := &http.Server{
		Handler:           server,
		ReadHeaderTimeout: 10 * time.Second,
	}

	logger.Info("taskmaster started",
		"addr", listener.Addr().String(),
		"client_id", opts.clientID,
		"token_lifetime", opts.tokenLifetime.String(),
		"invalid_client_status", opts.invalidClientStatus,
		"control", opts.control)
	if onListen != nil {
		onListen(listener.Addr().String())
	}

	serveErr := make(chan error, 1)
	go func() {
		serveErr <- httpServer.Serve(listener)
	}()

	select {
	case err := <-serveErr:
		return fmt.Errorf("serving on %s failed: %w", listener.Addr(), err)
	case <-ctx.Done():
	}

	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := httpServer.Shutdown(shutdownCtx); err != nil {
		logger.Error("taskmaster shutdown failed", "error", err)
		return fmt.Errorf("shutdown failed: %w", err)
	}
	<-serveErr
	logger.Info("taskmaster stopped", "addr", listener.Addr().String())
	return nil
}
