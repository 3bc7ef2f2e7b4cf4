package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/authproxy/authproxy/metrics"
	"github.com/authproxy/authproxy/tokencache"
)

// StatusClientClosedRequest is recorded when the client went away before
// the response was complete. The client never sees it; the code is nginx's
// convention for the same case.
const StatusClientClosedRequest = 499

// errorBody is the JSON body of every response the sidecar makes itself,
// in the shape of RFC 6749 section 5.2.
type errorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// writeError sends a JSON error response.
func writeError(w http.ResponseWriter, status int, code, description string) {
	body, _ := json.Marshal(errorBody{Error: code, Description: description})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// errRequestBody wraps a failure to read the client's request body.
type errRequestBody struct{ err error }

func (e errRequestBody) Error() string { return "read request body: " + e.err.Error() }
func (e errRequestBody) Unwrap() error { return e.err }

// handleError is the ReverseProxy ErrorHandler. It responds with a JSON
// error naming what failed, and keeps client cancellations apart from
// upstream failures in metrics and logs.
func (p *Proxy) handleError(w http.ResponseWriter, r *http.Request, err error) {
	var noToken *tokencache.NoTokenError
	var bodyErr errRequestBody
	switch {
	case errors.As(err, &noToken):
		w.Header().Set("Retry-After", strconv.Itoa(int(noToken.RetryAfter.Seconds())))
		writeError(w, http.StatusServiceUnavailable, "token_unavailable",
			"the sidecar could not get an access token from the token endpoint; retry later")
		p.debug("no token for request", r, zap.Error(err))
	case r.Context().Err() != nil:
		p.metrics.ClientCanceled.Inc()
		w.WriteHeader(StatusClientClosedRequest)
		p.debug("client canceled request", r, zap.Error(err))
	case errors.As(err, &bodyErr):
		writeError(w, http.StatusBadRequest, "invalid_request",
			"the sidecar could not read the request body")
		p.debug("cannot read request body", r, zap.Error(err))
	case isTimeout(err):
		p.metrics.UpstreamErrors.WithLabelValues(metrics.UpstreamTimeout).Inc()
		writeError(w, http.StatusGatewayTimeout, "upstream_timeout",
			"the upstream did not answer in time")
		p.log.Warn("upstream timed out", zap.String("method", r.Method), zap.Error(err))
	default:
		kind := metrics.UpstreamOther
		if isUnreachable(err) {
			kind = metrics.UpstreamUnreachable
		}
		p.metrics.UpstreamErrors.WithLabelValues(kind).Inc()
		writeError(w, http.StatusBadGateway, "upstream_unavailable",
			"the sidecar could not get a response from the upstream")
		p.log.Warn("upstream request failed", zap.String("method", r.Method),
			zap.String("kind", kind), zap.Error(err))
	}
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isUnreachable(err error) bool {
	var dnsErr *net.DNSError
	var opErr *net.OpError
	return errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &dnsErr) ||
		(errors.As(err, &opErr) && opErr.Op == "dial")
}

// debug logs a per-request event at debug level. A call allocates its
// variadic fields slice even when debug logging is off, so calls on the
// path of every request check debugEnabled first.
func (p *Proxy) debug(msg string, r *http.Request, fields ...zap.Field) {
	if ce := p.log.Check(zapcore.DebugLevel, msg); ce != nil {
		ce.Write(append(fields, zap.String("method", r.Method))...)
	}
}

// debugEnabled reports whether debug logging is on.
func (p *Proxy) debugEnabled() bool {
	return p.log.Core().Enabled(zapcore.DebugLevel)
}

// Starting returns a handler for the proxy port while the sidecar is still
// starting, for example while it reads the issuer's metadata. It returns 503
// token_unavailable with Retry-After, like a proxy without a token.
func Starting() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "token_unavailable",
			"the sidecar is starting and has no access token yet; retry later")
	})
}
