package main

import (
	"encoding/json"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/authproxy/authproxy/tokencache"
)

// admin serves the metrics and health endpoints.
type admin struct {
	// cache is nil until the token cache exists.
	cache    atomic.Pointer[tokencache.Cache]
	stopping atomic.Bool
}

// handler returns the admin port's routes.
func (a *admin) handler(reg *prometheus.Registry, log *zap.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          zap.NewStdLog(log),
		Registry:          reg,
		EnableOpenMetrics: true,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.HandleFunc("GET /tokenz", a.tokenz)
	return mux
}

// readyz responds 200 while a valid token is held and the sidecar is not
// shutting down.
func (a *admin) readyz(w http.ResponseWriter, r *http.Request) {
	cache := a.cache.Load()
	switch {
	case a.stopping.Load():
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": "shutting down"})
	case cache == nil:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": "starting"})
	case !cache.Ready():
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": "no valid token"})
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

// tokenStatus is the /tokenz body: the cache status plus derived ages.
type tokenStatus struct {
	tokencache.Status
	AgeSeconds       *float64 `json:"age_seconds,omitempty"`
	ExpiresInSeconds *float64 `json:"expires_in_seconds,omitempty"`
}

// tokenz reports the token's times and the last fetch outcome, never the
// token or the secret.
func (a *admin) tokenz(w http.ResponseWriter, r *http.Request) {
	cache := a.cache.Load()
	if cache == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting"})
		return
	}
	s := tokenStatus{Status: cache.Status()}
	now := time.Now()
	if s.Obtained != nil {
		age := now.Sub(*s.Obtained).Seconds()
		left := s.Expiry.Sub(now).Seconds()
		s.AgeSeconds, s.ExpiresInSeconds = &age, &left
	}
	writeJSON(w, http.StatusOK, s)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
