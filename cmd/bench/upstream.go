package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Paths that the upstream serves, with their body sizes.
const (
	smallPath = "/bench/small"
	largePath = "/bench/large"
	largeSize = 64 << 10
)

// smallBody is a JSON task of about 200 bytes, the size of a typical API
// response.
var smallBody = []byte(`{"id":"7d0c5a0e-1f7a-4c2b-9a51-3c1e8f9b2d44","title":"Renew the TLS certificate","status":"open","priority":2,"assignee":"ops","created_at":"2026-01-12T09:30:00Z","tags":["infra","tls"]}` + "\n")

// largeBody returns a JSON document of exactly largeSize bytes.
func largeBody() []byte {
	var b bytes.Buffer
	b.WriteString(`{"tasks":[`)
	for i := 0; b.Len() < largeSize-200; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"title":"Task number %d","status":"open"}`, i, i)
	}
	b.WriteString(`],"padding":"`)
	b.WriteString(strings.Repeat("x", largeSize-b.Len()-3))
	b.WriteString("\"}\n")
	return b.Bytes()
}

// upstreamHandler serves smallPath and largePath to requests with a
// non-empty Bearer credential and responds with 401 to any other request,
// so a proxy that drops or mangles the header shows up as wrk status
// errors.
func upstreamHandler() http.Handler {
	large := largeBody()
	smallLen := strconv.Itoa(len(smallBody))
	largeLen := strconv.Itoa(len(large))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header["Authorization"]
		if len(auth) != 1 || len(auth[0]) <= len("Bearer ") || !strings.HasPrefix(auth[0], "Bearer ") {
			http.Error(w, "missing or invalid Bearer credential", http.StatusUnauthorized)
			return
		}
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		switch r.URL.Path {
		case smallPath:
			h["Content-Length"] = []string{smallLen}
			_, _ = w.Write(smallBody)
		case largePath:
			h["Content-Length"] = []string{largeLen}
			_, _ = w.Write(large)
		default:
			http.NotFound(w, r)
		}
	})
}

// serveUpstream runs the upstream on addr until SIGTERM or SIGINT. The
// harness runs it in a subprocess so that its CPU use is not counted with
// the harness's.
func serveUpstream(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("invalid upstream address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("upstream address %q is not a loopback IP address; use 127.0.0.1:PORT", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	srv := &http.Server{Handler: upstreamHandler(), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("upstream: %w", err)
	}
	return nil
}
