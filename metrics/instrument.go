package metrics

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// instrumentedHandler counts, times and tracks the in-flight requests of
// next. It records the same series as promhttp's InstrumentHandlerInFlight,
// InstrumentHandlerDuration and InstrumentHandlerCounter with "method" and
// "code" labels, with one wrapper allocation per request instead of their
// two wrappers and four label maps.
type instrumentedHandler struct {
	m    *Metrics
	next http.Handler

	// mu guards series, which caches the children of the two vectors by
	// label values. A map lookup is cheaper than WithLabelValues, which
	// validates and hashes the values on every call.
	mu     sync.RWMutex
	series map[seriesKey]requestSeries
}

// seriesKey identifies a series by its method and code label values.
type seriesKey struct{ method, code string }

// requestSeries contains the counter and the histogram of one series.
type requestSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

func newInstrumentedHandler(m *Metrics, next http.Handler) *instrumentedHandler {
	return &instrumentedHandler{m: m, next: next, series: map[seriesKey]requestSeries{}}
}

func (h *instrumentedHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	h.m.InFlight.Inc()
	defer h.m.InFlight.Dec()
	rec := &statusRecorder{ResponseWriter: w}
	// Deferred, so that a response ReverseProxy aborts with a panic after
	// writing its status is still counted, under that status.
	defer h.record(r, rec, start)
	h.next.ServeHTTP(rec, r)
}

func (h *instrumentedHandler) record(r *http.Request, rec *statusRecorder, start time.Time) {
	s := h.lookup(seriesKey{methodLabel(r.Method), codeLabel(rec.status)})
	s.requests.Inc()
	s.duration.Observe(time.Since(start).Seconds())
}

// lookup returns the series for key, creating it on first use. The label
// values are bounded (see methodLabel and codeLabel), so the cache is too.
func (h *instrumentedHandler) lookup(key seriesKey) requestSeries {
	h.mu.RLock()
	s, ok := h.series[key]
	h.mu.RUnlock()
	if ok {
		return s
	}
	s = requestSeries{
		requests: h.m.Requests.WithLabelValues(key.method, key.code),
		duration: h.m.RequestDuration.WithLabelValues(key.method, key.code),
	}
	h.mu.Lock()
	h.series[key] = s
	h.mu.Unlock()
	return s
}

// statusRecorder is an http.ResponseWriter that records the status code
// sent through it. It passes Flush and Hijack through, and Unwrap lets
// http.ResponseController reach the other optional methods of the
// underlying writer.
type statusRecorder struct {
	http.ResponseWriter
	// status is the last status code written, as promhttp records it, so a
	// 1xx informational response followed by the final one records the
	// final one. Zero means none was written.
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

// Flush implements http.Flusher, for streamed responses such as
// server-sent events. It does nothing when the underlying writer cannot
// flush.
func (r *statusRecorder) Flush() {
	_ = r.FlushError()
}

// FlushError flushes the underlying writer, as http.ResponseController
// calls it, and returns http.ErrNotSupported when it cannot flush.
func (r *statusRecorder) FlushError() error {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return http.NewResponseController(r.ResponseWriter).Flush()
}

// Hijack implements http.Hijacker, which ReverseProxy uses to pass a
// protocol upgrade such as WebSocket through. A successful hijack without
// an earlier status records 101 Switching Protocols: ReverseProxy hijacks
// only for an upstream 101, and writes that response to the hijacked
// connection, out of the recorder's sight.
func (r *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil && r.status == 0 {
		r.status = http.StatusSwitchingProtocols
	}
	return conn, rw, err
}

// Unwrap returns the underlying writer, for http.ResponseController.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// methodLabel returns the method label value: the lowercase name of a
// standard method, or "unknown", as promhttp does, so that a client cannot
// create series with arbitrary method names.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet:
		return "get"
	case http.MethodPut:
		return "put"
	case http.MethodHead:
		return "head"
	case http.MethodPost:
		return "post"
	case http.MethodDelete:
		return "delete"
	case http.MethodConnect:
		return "connect"
	case http.MethodOptions:
		return "options"
	case "NOTIFY":
		return "notify"
	case http.MethodTrace:
		return "trace"
	case http.MethodPatch:
		return "patch"
	default:
		return "unknown"
	}
}

// codeLabels contains the code label value of each status from 100 to
// 599, built once so that labelling a request does not allocate.
var codeLabels = func() [600]string {
	var labels [600]string
	for code := 100; code < len(labels); code++ {
		labels[code] = strconv.Itoa(code)
	}
	return labels
}()

// codeLabel returns the code label value of status. A handler that wrote
// nothing counts as 200, as in promhttp and net/http.
func codeLabel(status int) string {
	switch {
	case status == 0:
		return "200"
	case status >= 100 && status < len(codeLabels):
		return codeLabels[status]
	default:
		return strconv.Itoa(status)
	}
}
