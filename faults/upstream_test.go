package faults_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zapcore"

	"github.com/authproxy/authproxy/metrics"
)

// checkUpstreamErrors checks every kind of authproxy_upstream_errors_total.
func checkUpstreamErrors(t *testing.T, s *sidecar, unreachable, timeout, other float64) {
	t.Helper()
	want := map[string]float64{
		metrics.UpstreamUnreachable: unreachable,
		metrics.UpstreamTimeout:     timeout,
		metrics.UpstreamOther:       other,
	}
	for kind, n := range want {
		if got := s.upstreamErrors(kind); got != n {
			t.Errorf(`authproxy_upstream_errors_total{kind=%q} = %v; want %v`, kind, got, n)
		}
	}
}

func TestUpstreamConnectionRefused(t *testing.T) {
	watch := newLeakWatch()
	endpoint := newTokenEndpoint(t, watch)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: "http://" + addr}, watch)
	client := newClient(t)

	r := get(t, client, s.URL+"/api/tasks")
	checkErrorResponse(t, r, http.StatusBadGateway, "upstream_unavailable")
	checkUpstreamErrors(t, s, 1, 0, 0)
	awaitCount(t, s.Metrics.Requests.WithLabelValues("get", "502"), 1, `authproxy_requests_total{method="get",code="502"}`)
	s.checkLogged(t, zapcore.WarnLevel, "upstream request failed")
	if !s.Cache.Ready() {
		t.Error("Cache.Ready() = false; want true, an upstream failure does not touch the token")
	}

	// The upstream comes up on the same port.
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	up.Listener.Close()
	up.Listener = ln
	up.Start()
	t.Cleanup(up.Close)
	s.checkServes(t, client)
}

// rawUpstream accepts connections and hands each to handle, for upstreams
// that break HTTP in ways httptest servers cannot.
func rawUpstream(t *testing.T, handle func(conn *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				handle(conn.(*net.TCPConn))
			})
		}
	})
	return "http://" + ln.Addr().String()
}

func TestUpstreamResetMidResponse(t *testing.T) {
	watch := newLeakWatch()
	endpoint := newTokenEndpoint(t, watch)
	var accepted atomic.Int32
	upstreamURL := rawUpstream(t, func(conn *net.TCPConn) {
		n := accepted.Add(1)
		if _, err := http.ReadRequest(bufio.NewReader(conn)); err != nil {
			return
		}
		if n > 1 {
			// Only the first connection breaks.
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
			return
		}
		_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n")
		_, _ = conn.Write(bytes.Repeat([]byte("x"), 1000))
		// Linger 0 makes Close send a TCP reset instead of a FIN.
		_ = conn.SetLinger(0)
	})
	s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: upstreamURL}, watch)
	client := newClient(t)

	// The sidecar has buffered the status line and the first bytes when
	// the upstream resets, so the client sees the connection close with
	// no response, or with a response whose body breaks off. It must
	// never see a complete response.
	resp, err := client.Get(s.URL + "/api/tasks")
	if err == nil {
		body, readErr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if readErr == nil {
			t.Errorf("the client read a complete response (status %d, %d bytes); want an error", resp.StatusCode, len(body))
		}
	}
	// ReverseProxy aborts the handler with a panic; the proxy counts the
	// failure before passing the panic on.
	checkUpstreamErrors(t, s, 0, 0, 1)
	s.checkLogged(t, zapcore.WarnLevel, "upstream response broke off after its headers were sent; the client's connection was closed")

	s.checkServes(t, client)
	if n := accepted.Load(); n != 2 {
		t.Errorf("the upstream accepted %d connections; want 2, the broken one and the one after", n)
	}
}

func TestUpstreamResetBeforeResponse(t *testing.T) {
	watch := newLeakWatch()
	endpoint := newTokenEndpoint(t, watch)
	upstreamURL := rawUpstream(t, func(conn *net.TCPConn) {
		_, _ = http.ReadRequest(bufio.NewReader(conn))
		_ = conn.SetLinger(0)
	})
	s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: upstreamURL}, watch)
	client := newClient(t)

	r := get(t, client, s.URL+"/api/tasks")
	checkErrorResponse(t, r, http.StatusBadGateway, "upstream_unavailable")
	checkUpstreamErrors(t, s, 0, 0, 1)
	s.checkLogged(t, zapcore.WarnLevel, "upstream request failed")
}

func TestUpstreamHeadersNeverSent(t *testing.T) {
	watch := newLeakWatch()
	endpoint := newTokenEndpoint(t, watch)
	up := newUpstream(t)
	up.setHandler(func(w http.ResponseWriter, r *http.Request, rec upstreamRequest) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	const upstreamTimeout = 300 * time.Millisecond
	s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL, upstreamTimeout: upstreamTimeout}, watch)
	client := newClient(t)

	start := time.Now()
	r := get(t, client, s.URL+"/api/tasks")
	if took := time.Since(start); took > upstreamTimeout+time.Second {
		t.Errorf("the client waited %v; want at most UPSTREAM_TIMEOUT (%v) plus 1s", took, upstreamTimeout)
	}
	checkErrorResponse(t, r, http.StatusGatewayTimeout, "upstream_timeout")
	checkUpstreamErrors(t, s, 0, 1, 0)
	awaitCount(t, s.Metrics.Requests.WithLabelValues("get", "504"), 1, `authproxy_requests_total{method="get",code="504"}`)
	s.checkLogged(t, zapcore.WarnLevel, "upstream timed out")

	up.setHandler(func(w http.ResponseWriter, r *http.Request, rec upstreamRequest) {})
	s.checkServes(t, client)
}

func TestUpstream401BurstOneRefetch(t *testing.T) {
	watch := newLeakWatch()
	endpoint := newTokenEndpoint(t, watch)
	up := newUpstream(t)
	const burst = 20
	var rejected sync.WaitGroup
	rejected.Add(burst)
	allArrived := make(chan struct{})
	go func() {
		rejected.Wait()
		close(allArrived)
	}()
	s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL}, watch)
	s.awaitReady(t)
	first := "Bearer " + endpoint.token(0)
	up.setHandler(func(w http.ResponseWriter, r *http.Request, rec upstreamRequest) {
		if r.Header.Get("Authorization") == first {
			// Hold every request until all of the burst has arrived, so
			// that all 20 carry the first token.
			rejected.Done()
			select {
			case <-allArrived:
			case <-time.After(5 * time.Second):
			}
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	client := newClient(t)

	statuses := make(chan int, burst)
	for range burst {
		go func() {
			resp, err := client.Get(s.URL + "/api/tasks")
			if err != nil {
				statuses <- -1
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	for range burst {
		if code := <-statuses; code != http.StatusOK {
			t.Errorf("a client got status %d; want 200 after the replay", code)
		}
	}
	if n := endpoint.count(); n != 2 {
		t.Errorf("token requests = %d; want 2, the first token and one refetch for the whole burst", n)
	}
	if v := testutil.ToFloat64(s.Metrics.ForcedRefreshes.WithLabelValues("refreshed")); v != 1 {
		t.Errorf(`authproxy_token_forced_refreshes_total{result="refreshed"} = %v; want 1`, v)
	}
	if v := testutil.ToFloat64(s.Metrics.Replays.WithLabelValues("replayed")); v != burst {
		t.Errorf(`authproxy_replays_total{result="replayed"} = %v; want %d`, v, burst)
	}
	second := "Bearer " + endpoint.token(1)
	var withSecond int
	for _, rec := range up.received() {
		if len(rec.Authorization) == 1 && rec.Authorization[0] == second {
			withSecond++
		}
	}
	if withSecond != burst {
		t.Errorf("upstream received %d requests with the second token; want %d", withSecond, burst)
	}
	s.checkLogged(t, zapcore.InfoLevel, "upstream rejected the token")
}

func TestUpstream401ForEveryToken(t *testing.T) {
	watch := newLeakWatch()
	endpoint := newTokenEndpoint(t, watch)
	up := newUpstream(t)
	up.setHandler(func(w http.ResponseWriter, r *http.Request, rec upstreamRequest) {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"message":"invalid token"}`)
	})
	const interval = 2 * time.Second
	s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL, forcedRefreshInterval: interval}, watch)
	client := newClient(t)

	const requests = 10
	start := time.Now()
	// firstDone is later than the forced refresh of the first request.
	var firstDone time.Time
	for i := range requests {
		r := get(t, client, s.URL+"/api/tasks")
		if i == 0 {
			firstDone = time.Now()
		}
		if r.Status != http.StatusUnauthorized {
			t.Errorf("request %d: status = %d; want the upstream's 401", i, r.Status)
		}
		if got := string(r.Body); got != `{"message":"invalid token"}` {
			t.Errorf("request %d: body = %q; want the upstream's body", i, got)
		}
		if got := r.Header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
			t.Errorf("request %d: WWW-Authenticate = %q; want the upstream's", i, got)
		}
	}
	if time.Since(start) >= interval {
		t.Skipf("the %d requests took longer than TOKEN_FORCED_REFRESH_INTERVAL (%v); the machine is too slow for this check", requests, interval)
	}
	if n := endpoint.count(); n != 2 {
		t.Errorf("token requests = %d; want 2, one forced refresh within TOKEN_FORCED_REFRESH_INTERVAL", n)
	}
	if v := testutil.ToFloat64(s.Metrics.ForcedRefreshes.WithLabelValues("refreshed")); v != 1 {
		t.Errorf(`authproxy_token_forced_refreshes_total{result="refreshed"} = %v; want 1`, v)
	}
	if v := testutil.ToFloat64(s.Metrics.ForcedRefreshes.WithLabelValues("rate_limited")); v != requests-1 {
		t.Errorf(`authproxy_token_forced_refreshes_total{result="rate_limited"} = %v; want %d`, v, requests-1)
	}
	if v := testutil.ToFloat64(s.Metrics.Replays.WithLabelValues("replayed")); v != 1 {
		t.Errorf(`authproxy_replays_total{result="replayed"} = %v; want 1, a replay is sent once`, v)
	}
	if n := len(up.received()); n != requests+1 {
		t.Errorf("upstream received %d requests; want %d, each once plus one replay", n, requests+1)
	}
	if !s.Cache.Ready() {
		t.Error("Cache.Ready() = false; want true, the upstream's 401 does not make the token endpoint fail")
	}

	// Once the interval has passed, the next 401 may force a refresh
	// again.
	awaitTrue(t, 2*interval, "the forced refresh interval passes", func() bool { return time.Since(firstDone) > interval })
	get(t, client, s.URL+"/api/tasks")
	if n := endpoint.count(); n != 3 {
		t.Errorf("token requests after the interval = %d; want 3", n)
	}
}

func TestUpstream401ReplaysLargePost(t *testing.T) {
	body := make([]byte, 2_000_000)
	_, _ = rand.Read(body)
	tests := []struct {
		name          string
		maxReplayBody int64
		replayed      bool
	}{
		{"replay cap 4 MiB", 4 << 20, true},
		{"replay cap 1 MiB", 1 << 20, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			watch := newLeakWatch()
			endpoint := newTokenEndpoint(t, watch)
			up := newUpstream(t)
			s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL, maxReplayBody: tt.maxReplayBody}, watch)
			s.awaitReady(t)
			first := "Bearer " + endpoint.token(0)
			up.setHandler(func(w http.ResponseWriter, r *http.Request, rec upstreamRequest) {
				if r.Header.Get("Authorization") == first {
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				w.WriteHeader(http.StatusCreated)
			})
			client := newClient(t)

			req, err := http.NewRequest(http.MethodPost, s.URL+"/api/tasks", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/octet-stream")
			r := do(t, client, req)
			got := up.received()
			if tt.replayed {
				if r.Status != http.StatusCreated {
					t.Errorf("status = %d; want 201 from the replay", r.Status)
				}
				if len(got) != 2 {
					t.Fatalf("upstream received %d requests; want 2, the original and the replay", len(got))
				}
			} else {
				if r.Status != http.StatusUnauthorized {
					t.Errorf("status = %d; want the upstream's 401, a body over the replay cap is not replayed", r.Status)
				}
				if len(got) != 1 {
					t.Fatalf("upstream received %d requests; want 1", len(got))
				}
			}
			for i, rec := range got {
				if rec.BodyErr != nil {
					t.Errorf("upstream request %d: read body: %v", i, rec.BodyErr)
				}
				if !bytes.Equal(rec.Body, body) {
					t.Errorf("upstream request %d: body of %d bytes differs from the %d bytes sent", i, len(rec.Body), len(body))
				}
				if rec.Method != http.MethodPost {
					t.Errorf("upstream request %d: method = %s; want POST", i, rec.Method)
				}
				if ct := rec.Header.Get("Content-Type"); ct != "application/octet-stream" {
					t.Errorf("upstream request %d: Content-Type = %q; want application/octet-stream", i, ct)
				}
			}
			result := "not_replayable"
			if tt.replayed {
				result = "replayed"
			}
			if v := testutil.ToFloat64(s.Metrics.Replays.WithLabelValues(result)); v != 1 {
				t.Errorf(`authproxy_replays_total{result=%q} = %v; want 1`, result, v)
			}
			if n := endpoint.count(); n != 2 {
				t.Errorf("token requests = %d; want 2, the rejected token is replaced either way", n)
			}
		})
	}
}

func TestUpstream401ChunkedBodyNotReplayed(t *testing.T) {
	watch := newLeakWatch()
	endpoint := newTokenEndpoint(t, watch)
	up := newUpstream(t)
	s := startSidecar(t, config{tokenURL: endpoint.URL, upstream: up.URL}, watch)
	s.awaitReady(t)
	first := "Bearer " + endpoint.token(0)
	up.setHandler(func(w http.ResponseWriter, r *http.Request, rec upstreamRequest) {
		if r.Header.Get("Authorization") == first {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	client := newClient(t)

	// A reader without a known length makes the client send the body
	// chunked, with no Content-Length.
	const payload = "line 1\nline 2\nline 3\n"
	req, err := http.NewRequest(http.MethodPost, s.URL+"/api/upload", io.MultiReader(strings.NewReader(payload)))
	if err != nil {
		t.Fatal(err)
	}
	r := do(t, client, req)
	if r.Status != http.StatusUnauthorized {
		t.Errorf("status = %d; want the upstream's 401, a chunked body cannot be replayed", r.Status)
	}
	got := up.received()
	if len(got) != 1 {
		t.Fatalf("upstream received %d requests; want 1", len(got))
	}
	if string(got[0].Body) != payload {
		t.Errorf("upstream body = %q; want %q", got[0].Body, payload)
	}
	if v := testutil.ToFloat64(s.Metrics.Replays.WithLabelValues("not_replayable")); v != 1 {
		t.Errorf(`authproxy_replays_total{result="not_replayable"} = %v; want 1`, v)
	}

	// The rejected token was replaced, so the next request carries the
	// new one.
	if r := get(t, client, s.URL+"/api/tasks"); r.Status != http.StatusOK {
		t.Errorf("next request: status = %d; want 200", r.Status)
	}
	got = up.received()
	if want := "Bearer " + endpoint.token(1); len(got) != 2 || len(got[1].Authorization) != 1 || got[1].Authorization[0] != want {
		t.Error("the request after the 401 did not carry the second token")
	}
	if n := endpoint.count(); n != 2 {
		t.Errorf("token requests = %d; want 2", n)
	}
}
