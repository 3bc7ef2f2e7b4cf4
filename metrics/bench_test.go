package metrics

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// nopWriter is a ResponseWriter that discards everything, so that the
// benchmark measures only the instrumentation.
type nopWriter struct{ header http.Header }

func (w *nopWriter) Header() http.Header         { return w.header }
func (w *nopWriter) WriteHeader(int)             {}
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }

func BenchmarkInstrumentHandler(b *testing.B) {
	m := New(prometheus.NewRegistry(), "bench")
	body := []byte("ok")
	h := m.InstrumentHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	}))
	req := httptest.NewRequest(http.MethodGet, "/api/tasks", nil)
	w := &nopWriter{header: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}

func BenchmarkInstrumentHandlerParallel(b *testing.B) {
	m := New(prometheus.NewRegistry(), "bench")
	h := m.InstrumentHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	req := httptest.NewRequest(http.MethodGet, "/api/tasks", nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &nopWriter{header: http.Header{}}
		for pb.Next() {
			h.ServeHTTP(w, req)
		}
	})
}
