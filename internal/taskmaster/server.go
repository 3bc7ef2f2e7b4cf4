package taskmaster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultTokenLifetime = time.Hour
	DefaultRecordLimit   = 100
)

// Config is the configuration of a Server.
type Config struct {
	// Clients maps each registered client id to its client secret.
	Clients map[string]string

	// TokenLifetime is the lifetime of issued access tokens. Zero or negative
	// means DefaultTokenLifetime.
	TokenLifetime time.Duration

	// InvalidClientStatus is the HTTP status for a wrong client id or secret:
	// http.StatusBadRequest (the hosted service's behaviour, and the default
	// for zero) or http.StatusUnauthorized (what its guide documents).
	InvalidClientStatus int

	// Now returns the current time. Nil means time.Now. Tests inject a clock
	// here to expire tokens without waiting.
	Now func() time.Time

	// DisableSeed leaves the store empty. By default New creates one project
	// and a few tasks in it, so GET /api/tasks returns a non-empty array.
	DisableSeed bool

	// EnableControl serves the control endpoints under /_control/. They need
	// no authentication, so enable them only on a loopback listener.
	EnableControl bool

	// RecordLimit is the number of recent token requests and recent API
	// requests that the server keeps for inspection. Zero means
	// DefaultRecordLimit.
	RecordLimit int
}

// Server is an in-memory Taskmaster server. It implements http.Handler.
type Server struct {
	mux *http.ServeMux
	now func() time.Time

	tokenRequests atomic.Int64
	apiRequests   atomic.Int64
	tokensIssued  atomic.Int64

	// guards clients, invalidClientStatus, tokenLifetime, tokens,
	// issuedSinceSweep, rejectAllTokens, tokenLatency, apiLatency,
	// tokenFailure and tokenRateLimit
	mu                  sync.Mutex
	clients             map[string]string
	invalidClientStatus int
	tokenLifetime       time.Duration
	tokens              map[string]tokenInfo
	issuedSinceSweep    int
	rejectAllTokens     bool
	tokenLatency        time.Duration
	apiLatency          time.Duration
	tokenFailure        injectedFailure
	tokenRateLimit      injectedRateLimit

	store    *store
	recorder *recorder
}

// New returns a Server configured by cfg. It copies cfg.Clients, so later
// changes to that map do not affect the server.
func New(cfg Config) *Server {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	lifetime := cfg.TokenLifetime
	if lifetime <= 0 {
		lifetime = DefaultTokenLifetime
	}
	invalidClientStatus := cfg.InvalidClientStatus
	if invalidClientStatus != http.StatusUnauthorized {
		invalidClientStatus = http.StatusBadRequest
	}
	recordLimit := cfg.RecordLimit
	if recordLimit <= 0 {
		recordLimit = DefaultRecordLimit
	}

	clients := make(map[string]string, len(cfg.Clients))
	for id, secret := range cfg.Clients {
		clients[id] = secret
	}

	s := &Server{
		mux:                 http.NewServeMux(),
		now:                 now,
		clients:             clients,
		invalidClientStatus: invalidClientStatus,
		tokenLifetime:       lifetime,
		tokens:              make(map[string]tokenInfo),
		store:               newStore(now),
		recorder:            newRecorder(recordLimit),
	}
	if !cfg.DisableSeed {
		s.store.seed()
	}

	s.mux.HandleFunc("POST /api/auth/oauth2/token", s.handleToken)
	s.routeAPI()
	if cfg.EnableControl {
		s.routeControl()
	}
	return s
}

// ServeHTTP dispatches the request to the token endpoint, the resource API or
// the control endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// sleepContext waits for d or until ctx is done, whichever comes first.
func sleepContext(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}

// readLimited reads all of body, or returns an error when it fails or is
// longer than limit bytes.
func readLimited(body io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading request body failed: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("request body exceeds %d bytes", limit)
	}
	return data, nil
}

// writeJSON sends v as a JSON response with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// messageResponse is the error body of the resource API.
type messageResponse struct {
	Message string `json:"message"`
}

// statusRecorder remembers the status code that a handler sends.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusRecorder) Unwrap() http.ResponseWriter {
	return w.ResponseWriter
}
