// Package metrics defines the sidecar's Prometheus collectors. Every label
// has a small, fixed set of values: never a path, a token or a client id.
package metrics

import (
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/authproxy/authproxy/tokencache"
)

const namespace = "authproxy"

// Upstream error kinds, the values of the kind label.
const (
	UpstreamUnreachable = "unreachable"
	UpstreamTimeout     = "timeout"
	UpstreamOther       = "other"
)

// Metrics holds the collectors. Build it with [New]; its methods are safe
// for concurrent use.
type Metrics struct {
	Requests        *prometheus.CounterVec
	RequestDuration *prometheus.HistogramVec
	InFlight        prometheus.Gauge
	UpstreamErrors  *prometheus.CounterVec
	ClientCanceled  prometheus.Counter
	TokenFetches    *prometheus.CounterVec
	TokenFetchTime  prometheus.Histogram
	TokenExpiry     prometheus.Gauge
	TokenObtained   prometheus.Gauge
	TokenValid      prometheus.Gauge
	ForcedRefreshes *prometheus.CounterVec
	Replays         *prometheus.CounterVec
}

// New creates the collectors and registers them, with the Go and process
// collectors and authproxy_build_info, on reg. Each call needs its own
// registry, so build one per server instance.
func New(reg prometheus.Registerer, version string) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "requests_total",
			Help: "Proxied requests by method and response status code.",
		}, []string{"method", "code"}),
		RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "request_duration_seconds",
			Help:    "Time to serve a proxied request, from its arrival to the last byte of the response.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"method", "code"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "requests_in_flight",
			Help: "Proxied requests being served.",
		}),
		UpstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "upstream_errors_total",
			Help: "Requests that failed between the sidecar and the upstream, by kind.",
		}, []string{"kind"}),
		ClientCanceled: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "client_canceled_requests_total",
			Help: "Requests abandoned by the client before the response was complete.",
		}),
		TokenFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "token_fetches_total",
			Help: "Token requests by outcome and OAuth error code or failure kind.",
		}, []string{"outcome", "error_code"}),
		TokenFetchTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "token_fetch_duration_seconds",
			Help:    "Time taken by token requests.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		TokenExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "token_expiry_timestamp_seconds",
			Help: "Expiry of the token being served, as a Unix time; 0 when no valid token is held.",
		}),
		TokenObtained: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "token_obtained_timestamp_seconds",
			Help: "When the token being served was requested, as a Unix time; 0 when no valid token is held.",
		}),
		TokenValid: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "token_valid",
			Help: "1 while a valid token is held, else 0.",
		}),
		ForcedRefreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "token_forced_refreshes_total",
			Help: "Forced token refreshes after an upstream 401 or a refresh request, by result.",
		}, []string{"result"}),
		Replays: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "replays_total",
			Help: "Requests the upstream rejected with 401, by result: replayed, not_replayable (the body cannot be sent again) or no_new_token (the forced refresh was rate-limited or failed).",
		}, []string{"result"}),
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help: "Build information; the value is always 1.",
	}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(version, runtime.Version()).Set(1)

	reg.MustRegister(
		m.Requests, m.RequestDuration, m.InFlight, m.UpstreamErrors, m.ClientCanceled,
		m.TokenFetches, m.TokenFetchTime, m.TokenExpiry, m.TokenObtained, m.TokenValid,
		m.ForcedRefreshes, m.Replays, buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// Start every labelled series at zero, so that rate() and alerts see
	// the first increment.
	for _, kind := range []string{UpstreamUnreachable, UpstreamTimeout, UpstreamOther} {
		m.UpstreamErrors.WithLabelValues(kind)
	}
	for _, r := range []string{"refreshed", "rate_limited", "failed"} {
		m.ForcedRefreshes.WithLabelValues(r)
	}
	for _, r := range []string{"replayed", "not_replayable", "no_new_token"} {
		m.Replays.WithLabelValues(r)
	}
	m.TokenFetches.WithLabelValues("success", "")
	for _, code := range tokencache.FailureLabels {
		m.TokenFetches.WithLabelValues("failure", code)
	}
	return m
}

// InstrumentHandler wraps the proxy handler with request counting, timing
// and the in-flight gauge. The wrapper keeps http.Flusher and
// http.Hijacker, so streaming and WebSocket upgrades pass through.
func (m *Metrics) InstrumentHandler(next http.Handler) http.Handler {
	return newInstrumentedHandler(m, next)
}

// FetchDone implements [tokencache.Observer].
func (m *Metrics) FetchDone(outcome, errorCode string, took time.Duration) {
	m.TokenFetches.WithLabelValues(outcome, errorCode).Inc()
	m.TokenFetchTime.Observe(took.Seconds())
}

// TokenChanged implements [tokencache.Observer].
func (m *Metrics) TokenChanged(t *tokencache.Token) {
	if t == nil {
		m.TokenValid.Set(0)
		m.TokenExpiry.Set(0)
		m.TokenObtained.Set(0)
		return
	}
	m.TokenValid.Set(1)
	m.TokenExpiry.Set(unixSeconds(t.Expiry))
	m.TokenObtained.Set(unixSeconds(t.Obtained))
}

// ForcedRefresh implements [tokencache.Observer].
func (m *Metrics) ForcedRefresh(result string) {
	m.ForcedRefreshes.WithLabelValues(result).Inc()
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

var _ tokencache.Observer = (*Metrics)(nil)
