package proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/authproxy/authproxy/metrics"
	"github.com/authproxy/authproxy/tokencache"
)

// TransportConfig configures [NewTransport].
type TransportConfig struct {
	// CAFile, if set, names a PEM bundle trusted in addition to the system
	// roots.
	CAFile string
	// ResponseHeaderTimeout bounds the wait for the upstream's response
	// headers. Zero means no limit.
	ResponseHeaderTimeout time.Duration
	// MaxIdleConns is the number of idle keep-alive connections kept to the
	// one upstream. Default: 256.
	MaxIdleConns int
}

// NewTransport returns an HTTP transport for a single upstream: keep-alive
// connections sized for one host, HTTP/2 where the server offers it,
// HTTPS_PROXY and NO_PROXY honoured, and the system CAs plus CAFile trusted.
func NewTransport(cfg TransportConfig) (*http.Transport, error) {
	tlsConfig, err := TLSConfig(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	if cfg.MaxIdleConns == 0 {
		cfg.MaxIdleConns = 256
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dialer.DialContext,
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   true,
		// A proxy passes bodies through as the upstream encoded them. With
		// compression on, a request without Accept-Encoding would get a
		// gzip body that the transport decompresses, costing CPU and
		// changing what the client receives.
		DisableCompression:    true,
		MaxIdleConns:          cfg.MaxIdleConns,
		MaxIdleConnsPerHost:   cfg.MaxIdleConns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
	}, nil
}

// TLSConfig returns a TLS configuration that trusts the system roots plus
// the certificates in caFile, if set.
func TLSConfig(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s contains no PEM certificate", caFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// authTransport sets the Bearer token on each request and, on a 401,
// replays the request once with a new token when its body allows it.
type authTransport struct {
	base      http.RoundTripper
	tokens    TokenSource
	maxReplay int64
	metrics   *metrics.Metrics
	log       *zap.Logger
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := t.tokens.Token(req.Context())
	if err != nil {
		closeBody(req)
		return nil, err
	}
	if err := t.bufferBody(req); err != nil {
		return nil, err
	}
	// The request is ReverseProxy's own copy, so setting its header does
	// not touch the client's request.
	req.Header["Authorization"] = tok.AuthorizationHeader()
	resp, err := t.base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	return t.replay(req, resp, tok)
}

// bufferBody reads a body of known length up to maxReplay bytes into memory
// and sets GetBody, so that the request can be sent again. A larger body, or
// one of unknown length, streams as it arrives and cannot be replayed:
// waiting for the end of a chunked upload would stall a streaming client.
func (t *authTransport) bufferBody(req *http.Request) error {
	if req.Body == nil || req.Body == http.NoBody {
		req.GetBody = func() (io.ReadCloser, error) { return http.NoBody, nil }
		return nil
	}
	if req.ContentLength <= 0 || req.ContentLength > t.maxReplay {
		req.GetBody = nil
		req.Body = clientBody{req.Body}
		return nil
	}
	buf := make([]byte, req.ContentLength)
	_, err := io.ReadFull(req.Body, buf)
	req.Body.Close()
	if err != nil {
		return errRequestBody{err}
	}
	req.Body = io.NopCloser(bytes.NewReader(buf))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	return nil
}

// replay handles a 401: it reports the token as rejected and, when the
// request can be sent again, sends it once with the new token. Otherwise,
// or when no new token is available, the 401 goes back to the client.
func (t *authTransport) replay(req *http.Request, resp *http.Response, rejected *tokencache.Token) (*http.Response, error) {
	ctx := req.Context()
	fresh, err := t.tokens.Reject(ctx, rejected)
	if err != nil {
		t.metrics.Replays.WithLabelValues("no_new_token").Inc()
		if !errors.Is(err, tokencache.ErrRefreshRateLimited) && ctx.Err() == nil {
			t.log.Warn("no new token after an upstream 401; returning the 401", zap.Error(err))
		}
		return resp, nil
	}
	if req.GetBody == nil {
		t.metrics.Replays.WithLabelValues("not_replayable").Inc()
		return resp, nil
	}
	body, err := req.GetBody()
	if err != nil {
		t.metrics.Replays.WithLabelValues("not_replayable").Inc()
		return resp, nil
	}
	drain(resp.Body)
	again := req.Clone(ctx)
	again.Body = body
	again.Header["Authorization"] = fresh.AuthorizationHeader()
	t.metrics.Replays.WithLabelValues("replayed").Inc()
	return t.base.RoundTrip(again)
}

// clientBody marks errors reading a streamed request body as the client's,
// so that a malformed or broken upload gets 400 and is not counted as an
// upstream failure. http.Transport returns a body read error as it is.
type clientBody struct{ io.ReadCloser }

func (b clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = errRequestBody{err}
	}
	return n, err
}

// drain reads a little of an unwanted body so that its connection can be
// reused, then closes it.
func drain(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 64<<10)
	body.Close()
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
