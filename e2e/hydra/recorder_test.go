package hydra_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingProxy is a reverse proxy on 127.0.0.1 that forwards every request
// to one target and records it with its body and response status. The tests
// put it in front of Hydra's token endpoint to see the form the sidecar
// sends, and in front of the upstream to see replayed request bodies.
type recordingProxy struct {
	server *httptest.Server

	mu       sync.Mutex
	requests []recordedRequest
}

// recordedRequest is one request that passed through a recordingProxy.
type recordedRequest struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
	// Form is the parsed body of an application/x-www-form-urlencoded
	// request, else nil.
	Form   url.Values
	Status int
}

// newRecordingProxy starts a recordingProxy that forwards to target, such as
// Hydra's public URL, and closes it with t.Cleanup.
func newRecordingProxy(t *testing.T, target string) *recordingProxy {
	t.Helper()
	targetURL, err := url.Parse(target)
	if err != nil {
		t.Fatalf("parse recording proxy target %q: %v", target, err)
	}
	forward := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(targetURL) },
	}
	p := &recordingProxy{}
	p.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "read request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		record := recordedRequest{
			Method: r.Method,
			Path:   r.URL.Path,
			Header: r.Header.Clone(),
			Body:   body,
		}
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
			record.Form, _ = url.ParseQuery(string(body))
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		forward.ServeHTTP(sw, r)
		record.Status = sw.status
		p.mu.Lock()
		p.requests = append(p.requests, record)
		p.mu.Unlock()
	}))
	t.Cleanup(p.server.Close)
	return p
}

// URL returns the proxy's base URL, such as http://127.0.0.1:40123.
func (p *recordingProxy) URL() string { return p.server.URL }

// Requests returns the requests recorded so far whose path is path.
func (p *recordingProxy) Requests(path string) []recordedRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []recordedRequest
	for _, r := range p.requests {
		if r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

// statusWriter records the status code written through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// traffic sends GET /api/tasks through a sidecar from a few goroutines
// until stopped, and counts the responses by status.
type traffic struct {
	stopCh chan struct{}
	wg     sync.WaitGroup

	mu       sync.Mutex
	total    int
	byStatus map[int]int
	failures []string // the first few non-200 responses and errors
}

const (
	// trafficPause is the wait between two requests of one goroutine. It
	// keeps the load at about 100 requests per second with two goroutines,
	// which each go through Hydra's introspection endpoint.
	trafficPause = 10 * time.Millisecond

	// trafficMaxRequests bounds the requests of one goroutine, so that the
	// traffic ends even when a test does not stop it.
	trafficMaxRequests = 5000

	// maxRecordedFailures bounds the failure descriptions kept.
	maxRecordedFailures = 5
)

// startTraffic starts workers goroutines that send requests until stop is
// called, each request limited by the sidecar client's timeout.
func startTraffic(s *sidecar, workers int) *traffic {
	tr := &traffic{stopCh: make(chan struct{}), byStatus: map[int]int{}}
	for range workers {
		tr.wg.Go(func() {
			for range trafficMaxRequests {
				select {
				case <-tr.stopCh:
					return
				default:
				}
				resp, err := s.send(http.MethodGet, "/api/tasks", nil)
				tr.record(resp, err)
				select {
				case <-tr.stopCh:
					return
				case <-time.After(trafficPause):
				}
			}
		})
	}
	return tr
}

func (tr *traffic) record(resp response, err error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.total++
	if err != nil {
		tr.byStatus[0]++
	} else {
		tr.byStatus[resp.Status]++
	}
	if (err != nil || resp.Status != http.StatusOK) && len(tr.failures) < maxRecordedFailures {
		if err != nil {
			tr.failures = append(tr.failures, fmt.Sprintf("%s: error: %v", time.Now().Format(time.RFC3339Nano), err))
		} else {
			tr.failures = append(tr.failures, fmt.Sprintf("%s: status %d: %s", time.Now().Format(time.RFC3339Nano), resp.Status, bytes.TrimSpace(resp.Body)))
		}
	}
}

// stop ends the traffic and waits for the goroutines to return.
func (tr *traffic) stop() {
	select {
	case <-tr.stopCh:
	default:
		close(tr.stopCh)
	}
	tr.wg.Wait()
}

// counts returns the number of requests sent, the number with status 200, and
// descriptions of the first failures.
func (tr *traffic) counts() (total, ok int, failures []string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.total, tr.byStatus[http.StatusOK], append([]string(nil), tr.failures...)
}
