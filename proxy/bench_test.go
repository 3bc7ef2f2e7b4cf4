package proxy

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authproxy/authproxy/metrics"
	"github.com/authproxy/authproxy/tokencache"
)

// benchFetcher returns the same long-lived grant on every call.
type benchFetcher struct{}

func (benchFetcher) Fetch(context.Context) (*tokencache.Grant, error) {
	return &tokencache.Grant{AccessToken: "bench-access-token", TokenType: "Bearer", ExpiresIn: time.Hour}, nil
}

// newBenchProxy returns a proxy to upstream whose token cache already
// contains a token, with the sidecar's transport and fresh metrics.
func newBenchProxy(b *testing.B, upstream string) *Proxy {
	b.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		b.Fatalf("parse upstream URL: %v", err)
	}
	cache, err := tokencache.New(tokencache.Config{Fetcher: benchFetcher{}})
	if err != nil {
		b.Fatalf("tokencache.New: %v", err)
	}
	b.Cleanup(cache.Close)
	if _, err := cache.Token(context.Background()); err != nil {
		b.Fatalf("first Token: %v", err)
	}
	transport, err := NewTransport(TransportConfig{})
	if err != nil {
		b.Fatalf("NewTransport: %v", err)
	}
	b.Cleanup(transport.CloseIdleConnections)
	p, err := New(Config{
		Upstream:  u,
		Tokens:    cache,
		Transport: transport,
		Metrics:   metrics.New(prometheus.NewRegistry(), "bench"),
	})
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	return p
}

// BenchmarkProxy_Rewrite measures the outbound request rewrite, with an
// inbound Authorization header to remove, for an upstream URL without a
// path and for one whose path prefixes every request path.
func BenchmarkProxy_Rewrite(b *testing.B) {
	tests := []struct {
		name, upstream, want string
	}{
		{"root", "http://127.0.0.1:9", "http://127.0.0.1:9/api/tasks/42?expand=owner"},
		{"prefix", "http://127.0.0.1:9/base", "http://127.0.0.1:9/base/api/tasks/42?expand=owner"},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			p := newBenchProxy(b, tt.upstream)
			in := httptest.NewRequest(http.MethodGet, "/api/tasks/42?expand=owner", nil)
			in.Header.Set("Accept", "application/json")
			in.Header.Set("User-Agent", "bench")
			out := in.Clone(context.Background())
			clientAuth := []string{"Bearer from-the-client"}
			inURL := *in.URL
			pr := &httputil.ProxyRequest{In: in, Out: out}
			b.ReportAllocs()
			for b.Loop() {
				// Undo the previous iteration's changes without allocating.
				*out.URL = inURL
				out.Host = in.Host
				out.Header["Authorization"] = clientAuth
				p.rewrite(pr)
			}
			if got := out.URL.String(); got != tt.want {
				b.Errorf("outbound URL got %q; want %q", got, tt.want)
			}
			if got := out.Header["Authorization"]; got != nil {
				b.Errorf("outbound Authorization got %q; want none", got)
			}
		})
	}
}

// discardWriter is a ResponseWriter that keeps the status and drops the
// body, so that the benchmark measures the proxy rather than a recorder.
type discardWriter struct {
	header http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.header }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }
func (w *discardWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }
func (w *discardWriter) Flush()                      {}

// BenchmarkProxy_ServeHTTP sends one request per iteration through the
// proxy handler, with metrics, to an upstream on loopback. The upstream is
// a minimal HTTP/1.1 responder that allocates nothing per request, so the
// allocations reported are the proxy's and its transport's. The inbound
// server's share, which the sidecar adds, is not included.
func BenchmarkProxy_ServeHTTP(b *testing.B) {
	for _, size := range []int{200, 64 << 10} {
		b.Run(strconv.Itoa(size)+"B", func(b *testing.B) {
			upstream := startRawUpstream(b, size)
			p := newBenchProxy(b, upstream)
			req := httptest.NewRequest(http.MethodGet, "/api/tasks", nil)
			w := &discardWriter{header: http.Header{}}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				clear(w.header)
				w.status, w.n = 0, 0
				p.ServeHTTP(w, req)
				if w.status != http.StatusOK || w.n != size {
					b.Fatalf("response got status %d with %d bytes; want 200 with %d", w.status, w.n, size)
				}
			}
		})
	}
}

// startRawUpstream starts an HTTP/1.1 server on 127.0.0.1 and returns its
// base URL. The server responds to every GET request with a body of size
// bytes, or with 401 when the request has no Bearer Authorization header. It reads and
// writes with fixed buffers, so that it adds no allocations of its own to
// the benchmark.
func startRawUpstream(b *testing.B, size int) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatalf("listen: %v", err)
	}
	ok := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(size) + "\r\n\r\n" + strings.Repeat("x", size))
	unauthorized := []byte("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			wg.Go(func() { serveRaw(conn, ok, unauthorized) })
		}
	})
	b.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + ln.Addr().String()
}

// serveRaw responds to the requests on conn, which must have no body,
// until the connection closes.
func serveRaw(conn net.Conn, ok, unauthorized []byte) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	for {
		authorized := false
		for {
			line, err := r.ReadSlice('\n')
			if err != nil {
				return
			}
			if bytes.HasPrefix(line, []byte("Authorization: Bearer ")) {
				authorized = true
			}
			if len(line) <= 2 {
				break // The blank line that ends the header.
			}
		}
		resp := unauthorized
		if authorized {
			resp = ok
		}
		if _, err := conn.Write(resp); err != nil {
			return
		}
	}
}
