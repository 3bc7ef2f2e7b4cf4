package proxy

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"

	"go.uber.org/zap"

	"github.com/authproxy/authproxy/metrics"
	"github.com/authproxy/authproxy/tokencache"
)

// TokenSource supplies tokens; *tokencache.Cache implements it.
type TokenSource interface {
	// Token returns a valid token or an error matching tokencache.ErrNoToken.
	Token(ctx context.Context) (*tokencache.Token, error)
	// Reject reports a token the upstream refused and returns a new one.
	Reject(ctx context.Context, rejected *tokencache.Token) (*tokencache.Token, error)
}

// Config configures a [Proxy].
type Config struct {
	// Upstream is the base URL requests go to. Its path, if any, is
	// prefixed to every request path. Required.
	Upstream *url.URL
	// Tokens supplies the Bearer tokens. Required.
	Tokens TokenSource
	// Transport sends requests upstream. Required; see [NewTransport].
	Transport http.RoundTripper
	// MaxReplayBody is the largest request body, in bytes, that is buffered
	// so the request can be replayed after a 401. Zero means 1 MiB; a
	// negative value turns the buffering off, so only requests without a
	// body are replayed.
	MaxReplayBody int64
	// RequiredHeader and RequiredValue, if set, make the proxy return 403 to
	// any request without that header and value. The header is not
	// forwarded.
	RequiredHeader string
	RequiredValue  string
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// Metrics is required.
	Metrics *metrics.Metrics
}

// Proxy is the sidecar's proxy handler. It serves every path itself: it
// never cleans paths or redirects, as http.ServeMux would.
type Proxy struct {
	cfg     Config
	log     *zap.Logger
	metrics *metrics.Metrics
	rp      *httputil.ReverseProxy
	handler http.Handler
}

// New returns a proxy to cfg.Upstream.
func New(cfg Config) (*Proxy, error) {
	switch {
	case cfg.Upstream == nil || cfg.Upstream.Host == "":
		return nil, errors.New("proxy: Config.Upstream must be an absolute URL")
	case cfg.Tokens == nil:
		return nil, errors.New("proxy: Config.Tokens is nil")
	case cfg.Transport == nil:
		return nil, errors.New("proxy: Config.Transport is nil")
	case cfg.Metrics == nil:
		return nil, errors.New("proxy: Config.Metrics is nil")
	}
	if cfg.MaxReplayBody == 0 {
		cfg.MaxReplayBody = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	// ReverseProxy logs body copy errors, mostly clients that went away,
	// so they go to debug.
	errorLog, err := zap.NewStdLogAt(cfg.Logger, zap.DebugLevel)
	if err != nil {
		return nil, err
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger, metrics: cfg.Metrics}
	p.rp = &httputil.ReverseProxy{
		Rewrite: p.rewrite,
		Transport: &authTransport{
			base:      cfg.Transport,
			tokens:    cfg.Tokens,
			maxReplay: cfg.MaxReplayBody,
			metrics:   cfg.Metrics,
			log:       cfg.Logger,
		},
		BufferPool:     bufferPool{},
		ErrorHandler:   p.handleError,
		ModifyResponse: p.modifyResponse,
		ErrorLog:       errorLog,
	}
	p.handler = cfg.Metrics.InstrumentHandler(http.HandlerFunc(p.serve))
	return p, nil
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.handler.ServeHTTP(w, r)
}

// serve checks the request and hands it to the ReverseProxy.
func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodConnect:
		writeError(w, http.StatusMethodNotAllowed, "invalid_request",
			"the sidecar does not accept CONNECT; send requests with a path, such as GET /api/tasks")
		return
	case len(r.RequestURI) == 0 || r.RequestURI[0] != '/':
		// An absolute-form target (GET http://other.example/ HTTP/1.1) or
		// "*" would otherwise be forwarded to the upstream anyway, which
		// hides a client's mistake.
		writeError(w, http.StatusBadRequest, "invalid_request",
			"the sidecar accepts only a path as the request target, such as /api/tasks")
		return
	case p.cfg.RequiredHeader != "" && !p.hasRequiredHeader(r):
		writeError(w, http.StatusForbidden, "access_denied",
			"the request lacks the header that this sidecar requires")
		return
	}
	defer func() {
		if v := recover(); v != nil {
			p.aborted(r, v)
		}
	}()
	p.rp.ServeHTTP(w, r)
}

// aborted counts and logs a response that ReverseProxy abandoned after
// sending its headers, then re-panics with v so that net/http closes the
// connection. ReverseProxy panics with http.ErrAbortHandler when copying the
// body fails: either the upstream broke off or the client went away.
func (p *Proxy) aborted(r *http.Request, v any) {
	if v == http.ErrAbortHandler {
		if r.Context().Err() != nil {
			p.metrics.ClientCanceled.Inc()
			p.debug("client went away during the response", r)
		} else {
			p.metrics.UpstreamErrors.WithLabelValues(metrics.UpstreamOther).Inc()
			p.log.Warn("upstream response broke off after its headers were sent; the client's connection was closed",
				zap.String("method", r.Method))
		}
	}
	panic(v)
}

func (p *Proxy) hasRequiredHeader(r *http.Request) bool {
	got := r.Header.Get(p.cfg.RequiredHeader)
	return subtle.ConstantTimeCompare([]byte(got), []byte(p.cfg.RequiredValue)) == 1
}

// rewrite points the outbound request at the upstream. ReverseProxy has
// already removed hop-by-hop headers, including any named in the client's
// Connection header, so the Authorization the transport sets later cannot
// be stripped that way.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	// SetURL joins the paths with their escaping kept (%2F stays %2F),
	// keeps the query, and sets Host to the upstream's host.
	pr.SetURL(p.cfg.Upstream)
	if n := len(pr.Out.Header["Authorization"]); n > 0 {
		delete(pr.Out.Header, "Authorization")
		if p.debugEnabled() {
			p.debug("discarded the client's Authorization header", pr.In, zap.Int("values", n))
		}
	}
	if p.cfg.RequiredHeader != "" {
		pr.Out.Header.Del(p.cfg.RequiredHeader)
	}
}

func (p *Proxy) modifyResponse(resp *http.Response) error {
	if p.debugEnabled() {
		p.debug("proxied request", resp.Request, zap.Int("status", resp.StatusCode))
	}
	return nil
}

// bufferPool reuses the 32 KiB buffers that ReverseProxy copies bodies
// with, instead of allocating one per request.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }

var _ http.Handler = (*Proxy)(nil)
