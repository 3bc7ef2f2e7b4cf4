package faults_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zapcore"
)

func TestClientCancelsMidRequest(t *testing.T) {
	watch := newLeakWatch()
	endpoint := newTokenEndpoint(t, watch)
	up := newUpstream(t)
	arrived := make(chan struct{}, 1)
	upstreamCanceled := make(chan struct{})
	up.setHandler(func(w http.ResponseWriter, r *http.Request, rec upstreamRequest) {
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
			close(upstreamCanceled)
		case <-time.After(10 * time.Second):
		}
	})
	s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL}, watch)
	client := newClient(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/api/slow", nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not reach the upstream within 5s")
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("client error = %v; want context.Canceled", err)
	}
	select {
	case <-upstreamCanceled:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request's context was not canceled within 5s of the client leaving")
	}
	awaitCount(t, s.Metrics.ClientCanceled, 1, "authproxy_client_canceled_requests_total")
	awaitCount(t, s.Metrics.Requests.WithLabelValues("get", "499"), 1, `authproxy_requests_total{method="get",code="499"}`)
	checkUpstreamErrors(t, s, 0, 0, 0)
	s.checkNoLogAbove(t, zapcore.InfoLevel)

	up.setHandler(func(w http.ResponseWriter, r *http.Request, rec upstreamRequest) {})
	s.checkServes(t, client)
}

// dial opens a raw TCP connection to addr that closes when the test ends.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	return conn
}

func TestClientSendsHeadersSlowly(t *testing.T) {
	watch := newLeakWatch()
	endpoint := newTokenEndpoint(t, watch)
	up := newUpstream(t)
	const readHeaderTimeout = 300 * time.Millisecond
	s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL, readHeaderTimeout: readHeaderTimeout}, watch)

	conn := dial(t, s.Addr)
	start := time.Now()
	// One header line every 50ms: each byte arrives well within any idle
	// limit, but the whole block takes longer than READ_HEADER_TIMEOUT.
	go func() {
		if _, err := io.WriteString(conn, "GET /api/tasks HTTP/1.1\r\nHost: sidecar\r\n"); err != nil {
			return
		}
		for i := range 100 {
			time.Sleep(50 * time.Millisecond)
			if _, err := fmt.Fprintf(conn, "X-Slow-%d: a\r\n", i); err != nil {
				return
			}
		}
	}()
	n, err := io.Copy(io.Discard, conn)
	took := time.Since(start)
	if err != nil && !isReset(err) {
		t.Errorf("read: %v; want the sidecar to close the connection", err)
	}
	if n != 0 {
		t.Errorf("the sidecar sent %d bytes; want none, it closes the connection without a response", n)
	}
	// The server starts its clock when it accepts the connection, which can
	// be a little before the dial returns here.
	if took < readHeaderTimeout-100*time.Millisecond || took > readHeaderTimeout+time.Second {
		t.Errorf("the connection closed after %v; want READ_HEADER_TIMEOUT (%v), from 100ms less to 1s more", took, readHeaderTimeout)
	}
	if got := len(up.received()); got != 0 {
		t.Errorf("upstream received %d requests; want 0", got)
	}
	s.checkServes(t, newClient(t))
}

func isReset(err error) bool {
	var opErr *net.OpError
	return errors.As(err, &opErr) && strings.Contains(opErr.Err.Error(), "connection reset")
}

func TestClientOversizedHeaders(t *testing.T) {
	watch := newLeakWatch()
	endpoint := newTokenEndpoint(t, watch)
	up := newUpstream(t)
	const maxHeaderBytes = 8192
	s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL, maxHeaderBytes: maxHeaderBytes}, watch)

	conn := dial(t, s.Addr)
	big := strings.Repeat("a", 64<<10)
	go func() {
		_, _ = io.WriteString(conn, "GET /api/tasks HTTP/1.1\r\nHost: sidecar\r\nX-Big: "+big+"\r\n\r\n")
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status = %d; want 431", resp.StatusCode)
	}
	if got := len(up.received()); got != 0 {
		t.Errorf("upstream received %d requests; want 0", got)
	}

	// A header block under the limit still goes through.
	req, err := http.NewRequest(http.MethodGet, s.URL+"/api/tasks", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Medium", strings.Repeat("b", maxHeaderBytes/2))
	if r := do(t, newClient(t), req); r.Status != http.StatusOK {
		t.Errorf("status with a %d-byte header = %d; want 200", maxHeaderBytes/2, r.Status)
	}
}

// TestClientRequestTargetsRejected sends request targets that would make
// the sidecar an open forward proxy. Nothing may reach the upstream or a
// decoy loopback server that the targets name. The sidecar never resolves
// or contacts other.example, and no server for it exists.
func TestClientRequestTargetsRejected(t *testing.T) {
	watch := newLeakWatch()
	endpoint := newTokenEndpoint(t, watch)
	up := newUpstream(t)
	var decoyHits atomic.Int32
	decoy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		decoyHits.Add(1)
	}))
	t.Cleanup(decoy.Close)
	decoyAddr := strings.TrimPrefix(decoy.URL, "http://")
	s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL}, watch)
	s.awaitReady(t)

	tests := []struct {
		name    string
		request string
		status  int
	}{
		{"absolute form", "GET http://other.example/ HTTP/1.1\r\nHost: other.example\r\n\r\n", http.StatusBadRequest},
		{"absolute form to decoy", "GET http://" + decoyAddr + "/ HTTP/1.1\r\nHost: " + decoyAddr + "\r\n\r\n", http.StatusBadRequest},
		{"absolute form https", "GET https://other.example/api HTTP/1.1\r\nHost: other.example\r\n\r\n", http.StatusBadRequest},
		{"connect", "CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\n\r\n", http.StatusMethodNotAllowed},
		{"connect to decoy", "CONNECT " + decoyAddr + " HTTP/1.1\r\nHost: " + decoyAddr + "\r\n\r\n", http.StatusMethodNotAllowed},
		{"asterisk", "GET * HTTP/1.1\r\nHost: sidecar\r\n\r\n", http.StatusBadRequest},
		// net/http responds to OPTIONS * itself with an empty 200, before
		// any handler runs.
		{"options asterisk", "OPTIONS * HTTP/1.1\r\nHost: sidecar\r\n\r\n", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := dial(t, s.Addr)
			if _, err := io.WriteString(conn, tt.request); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("read response: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d; want %d (body %q)", resp.StatusCode, tt.status, body)
			}
			if tt.status == http.StatusOK {
				return
			}
			var e errorBody
			if err := json.Unmarshal(body, &e); err != nil || e.Error != "invalid_request" {
				t.Errorf("body = %q; want a JSON invalid_request error", body)
			}
		})
	}
	if n := len(up.received()); n != 0 {
		t.Errorf("upstream received %d requests; want 0", n)
	}
	if n := decoyHits.Load(); n != 0 {
		t.Errorf("decoy received %d requests; want 0", n)
	}

	// A Host header naming the decoy does not redirect an origin-form
	// request: it goes to the upstream, with the upstream's host.
	conn := dial(t, s.Addr)
	if _, err := io.WriteString(conn, "GET /api/tasks HTTP/1.1\r\nHost: "+decoyAddr+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("origin-form request with Host %s: status = %d; want 200", decoyAddr, resp.StatusCode)
	}
	got := up.received()
	if len(got) != 1 {
		t.Fatalf("upstream received %d requests; want 1", len(got))
	}
	if want := strings.TrimPrefix(up.URL, "http://"); got[0].Host != want {
		t.Errorf("upstream Host = %q; want %q", got[0].Host, want)
	}
	if n := decoyHits.Load(); n != 0 {
		t.Errorf("decoy received %d requests; want 0", n)
	}
}

func TestClientCredentialsNotForwarded(t *testing.T) {
	watch := newLeakWatch()
	const inbound = "Bearer client-own-credential-77"
	const proxyAuth = "Basic cHJveHk6Y3JlZGVudGlhbA=="
	watch.add("client-own-credential-77", "cHJveHk6Y3JlZGVudGlhbA==")
	endpoint := newTokenEndpoint(t, watch)
	up := newUpstream(t)
	s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL}, watch)
	client := newClient(t)

	req, err := http.NewRequest(http.MethodGet, s.URL+"/api/tasks", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Add("Authorization", inbound)
	req.Header.Add("Authorization", "Basic second-value")
	req.Header.Set("Proxy-Authorization", proxyAuth)
	// Naming Authorization in Connection would make ReverseProxy strip it
	// as hop-by-hop; the sidecar's own value must survive that.
	req.Header.Set("Connection", "Authorization")
	if r := do(t, client, req); r.Status != http.StatusOK {
		t.Fatalf("status = %d; want 200 (body %q)", r.Status, r.Body)
	}
	got := up.received()
	if len(got) != 1 {
		t.Fatalf("upstream received %d requests; want 1", len(got))
	}
	if n := len(got[0].Authorization); n != 1 {
		t.Fatalf("upstream received %d Authorization values; want 1", n)
	}
	if got[0].Authorization[0] != "Bearer "+endpoint.token(0) {
		t.Error("upstream Authorization is not the sidecar's token")
	}
	for name, values := range got[0].Header {
		for _, v := range values {
			if strings.Contains(v, "client-own-credential-77") || strings.Contains(v, "cHJveHk6Y3JlZGVudGlhbA==") {
				t.Errorf("upstream header %s carries the client's credential", name)
			}
		}
	}
	s.checkNoLogAbove(t, zapcore.InfoLevel)
}

func TestRequiredHeader(t *testing.T) {
	watch := newLeakWatch()
	const name, value = "X-Sidecar-Key", "sidecar-key-9c41"
	watch.add(value)
	endpoint := newTokenEndpoint(t, watch)
	up := newUpstream(t)
	s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL, requiredHeader: name, requiredValue: value}, watch)
	client := newClient(t)

	tests := []struct {
		name   string
		value  string
		status int
	}{
		{"missing", "", http.StatusForbidden},
		{"wrong value", "sidecar-key-0000", http.StatusForbidden},
		{"prefix of the value", "sidecar-key", http.StatusForbidden},
		{"right value", value, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(up.received())
			req, err := http.NewRequest(http.MethodGet, s.URL+"/api/tasks", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.value != "" {
				req.Header.Set(name, tt.value)
			}
			r := do(t, client, req)
			if tt.status == http.StatusForbidden {
				checkErrorResponse(t, r, http.StatusForbidden, "access_denied")
				if n := len(up.received()) - before; n != 0 {
					t.Errorf("upstream received %d requests; want 0", n)
				}
				return
			}
			if r.Status != tt.status {
				t.Fatalf("status = %d; want %d", r.Status, tt.status)
			}
			got := up.received()
			if len(got) != before+1 {
				t.Fatalf("upstream received %d new requests; want 1", len(got)-before)
			}
			if v := got[len(got)-1].Header.Values(name); len(v) != 0 {
				t.Errorf("upstream received %s with %d values; want it removed", name, len(v))
			}
		})
	}
	if v := testutil.ToFloat64(s.Metrics.Requests.WithLabelValues("get", "403")); v != 3 {
		t.Errorf(`authproxy_requests_total{method="get",code="403"} = %v; want 3`, v)
	}
}
