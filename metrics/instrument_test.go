package metrics

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestInstrumentHandlerMatchesPromhttp checks that the series and label
// values are those of the promhttp middleware that InstrumentHandler
// replaces, so that dashboards and alerts keep working.
func TestInstrumentHandlerMatchesPromhttp(t *testing.T) {
	tests := []struct {
		name   string
		method string
		handle func(w http.ResponseWriter)
	}{
		{"get 200", http.MethodGet, func(w http.ResponseWriter) { w.WriteHeader(http.StatusOK) }},
		{"implicit 200 on write", http.MethodPost, func(w http.ResponseWriter) { _, _ = io.WriteString(w, "x") }},
		{"nothing written", http.MethodDelete, func(w http.ResponseWriter) {}},
		{"499", http.MethodGet, func(w http.ResponseWriter) { w.WriteHeader(499) }},
		{"503", http.MethodPatch, func(w http.ResponseWriter) { w.WriteHeader(http.StatusServiceUnavailable) }},
		{"nonstandard method", "PURGE", func(w http.ResponseWriter) { w.WriteHeader(http.StatusNotFound) }},
		{"early hints then 200", http.MethodGet, func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusOK)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { tt.handle(w) })

			ourReg := prometheus.NewRegistry()
			ours := New(ourReg, "test")
			ours.InstrumentHandler(handler).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(tt.method, "/", nil))

			theirReg := prometheus.NewRegistry()
			theirs := New(theirReg, "test")
			promhttp.InstrumentHandlerInFlight(theirs.InFlight,
				promhttp.InstrumentHandlerDuration(theirs.RequestDuration,
					promhttp.InstrumentHandlerCounter(theirs.Requests, handler))).
				ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(tt.method, "/", nil))

			for _, name := range []string{"authproxy_requests_total", "authproxy_request_duration_seconds"} {
				got, want := seriesLabels(t, ourReg, name), seriesLabels(t, theirReg, name)
				if got != want {
					t.Errorf("%s series got %s; want %s", name, got, want)
				}
			}
		})
	}
}

// seriesLabels returns the label pairs of every series of the metric
// family name in reg, one series per line.
func seriesLabels(t *testing.T, reg *prometheus.Registry, name string) string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var series []string
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			var pairs []string
			for _, l := range m.GetLabel() {
				pairs = append(pairs, l.GetName()+"="+l.GetValue())
			}
			series = append(series, strings.Join(pairs, ","))
		}
	}
	if len(series) == 0 {
		t.Fatalf("no series of %s", name)
	}
	return strings.Join(series, "\n")
}

func TestInstrumentHandlerInFlight(t *testing.T) {
	m := New(prometheus.NewRegistry(), "test")
	var during float64
	h := m.InstrumentHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		during = testutil.ToFloat64(m.InFlight)
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	if during != 1 {
		t.Errorf("in-flight gauge during the request got %v; want 1", during)
	}
	if got := testutil.ToFloat64(m.InFlight); got != 0 {
		t.Errorf("in-flight gauge after the request got %v; want 0", got)
	}
	if got := testutil.ToFloat64(m.Requests.WithLabelValues("get", "200")); got != 1 {
		t.Errorf("requests_total{get,200} got %v; want 1", got)
	}
}

func TestInstrumentHandlerFlush(t *testing.T) {
	m := New(prometheus.NewRegistry(), "test")
	var flushErr error
	var isFlusher bool
	h := m.InstrumentHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, isFlusher = w.(http.Flusher)
		flushErr = http.NewResponseController(w).Flush()
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if !isFlusher {
		t.Error("wrapped writer is not an http.Flusher")
	}
	if flushErr != nil {
		t.Errorf("ResponseController.Flush got %v; want nil", flushErr)
	}
	if !rec.Flushed {
		t.Error("underlying recorder was not flushed")
	}
}

// plainWriter is a ResponseWriter without optional methods.
type plainWriter struct{ header http.Header }

func (w *plainWriter) Header() http.Header         { return w.header }
func (w *plainWriter) WriteHeader(int)             {}
func (w *plainWriter) Write(p []byte) (int, error) { return len(p), nil }

func TestInstrumentHandlerNotSupported(t *testing.T) {
	m := New(prometheus.NewRegistry(), "test")
	var flushErr, hijackErr error
	h := m.InstrumentHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		flushErr = rc.Flush()
		_, _, hijackErr = rc.Hijack()
	}))
	h.ServeHTTP(&plainWriter{header: http.Header{}}, httptest.NewRequest(http.MethodGet, "/", nil))
	if !errors.Is(flushErr, http.ErrNotSupported) {
		t.Errorf("Flush got %v; want http.ErrNotSupported", flushErr)
	}
	if !errors.Is(hijackErr, http.ErrNotSupported) {
		t.Errorf("Hijack got %v; want http.ErrNotSupported", hijackErr)
	}
}

// TestInstrumentHandlerHijackAndUnwrap runs a real server, because only
// its writer supports Hijack and deadlines.
func TestInstrumentHandlerHijackAndUnwrap(t *testing.T) {
	m := New(prometheus.NewRegistry(), "test")
	var deadlineErr error
	h := m.InstrumentHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// SetWriteDeadline is reachable only through Unwrap.
		deadlineErr = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Minute))
		conn, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\nhello")
		_ = rw.Flush()
	}))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Errorf("status got %d; want 101", resp.StatusCode)
	}
	if deadlineErr != nil {
		t.Errorf("SetWriteDeadline through the wrapper got %v; want nil", deadlineErr)
	}
	// The client can read the response before the handler returns and the
	// metrics are recorded, so poll briefly.
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(m.Requests.WithLabelValues("get", "101")) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("requests_total{get,101} got %v; want 1",
				testutil.ToFloat64(m.Requests.WithLabelValues("get", "101")))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCodeLabel(t *testing.T) {
	tests := []struct {
		status int
		want   string
	}{
		{0, "200"}, {100, "100"}, {200, "200"}, {499, "499"}, {599, "599"}, {600, "600"}, {999, "999"},
	}
	for _, tt := range tests {
		if got := codeLabel(tt.status); got != tt.want {
			t.Errorf("codeLabel(%d) got %q; want %q", tt.status, got, tt.want)
		}
	}
}
