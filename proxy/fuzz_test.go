package proxy_test

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authproxy/authproxy/metrics"
	"github.com/authproxy/authproxy/proxy"
	"github.com/authproxy/authproxy/tokencache"
)

// staticFetcher issues the same Bearer token on every request.
type staticFetcher struct{}

func (staticFetcher) Fetch(context.Context) (*tokencache.Grant, error) {
	return &tokencache.Grant{AccessToken: "fuzz-token", TokenType: "Bearer", ExpiresIn: 3600e9}, nil
}

// FuzzRewrite sends fuzzed request targets and headers through the proxy
// to a loopback upstream. The upstream must receive the base path joined
// with the escaped inbound path, the same query, exactly one
// Authorization (the sidecar's), and no part of the client's credentials.
func FuzzRewrite(f *testing.F) {
	f.Add(uint8(0), "/api/tasks", "limit=10", "X-Trace", "abc")
	f.Add(uint8(1), "/a%2Fb/c", "q=%20x&q=y", "Connection", "Authorization")
	f.Add(uint8(2), "/../../etc/passwd", "", "Proxy-Authorization", "Basic eA==")
	f.Add(uint8(3), "//other.example/x", "", "Authorization", "Bearer second")
	f.Add(uint8(1), "/", "", "X-Forwarded-For", "1.2.3.4")
	f.Add(uint8(0), "/%e2%82%ac;x=1", ";", "Cookie", "a=b")
	f.Add(uint8(2), "/ü", "a=ü", "Connection", "close, X-Trace")

	bases := []string{"", "/base", "/base/", "/a%2Fb/"}
	var mu sync.Mutex
	var got *http.Request
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r
		mu.Unlock()
	}))
	defer upstream.Close()
	transport, err := proxy.NewTransport(proxy.TransportConfig{})
	if err != nil {
		f.Fatal(err)
	}
	defer transport.CloseIdleConnections()
	cache, err := tokencache.New(tokencache.Config{Fetcher: staticFetcher{}})
	if err != nil {
		f.Fatal(err)
	}
	defer cache.Close()
	proxies := make([]*proxy.Proxy, len(bases))
	baseURLs := make([]*url.URL, len(bases))
	for i, base := range bases {
		u, err := url.Parse(upstream.URL + base)
		if err != nil {
			f.Fatal(err)
		}
		baseURLs[i] = u
		proxies[i], err = proxy.New(proxy.Config{
			Upstream: u, Tokens: cache, Transport: transport,
			Metrics: metrics.New(prometheus.NewRegistry(), "fuzz"),
		})
		if err != nil {
			f.Fatal(err)
		}
	}

	f.Fuzz(func(t *testing.T, baseIndex uint8, path, query, headerName, headerValue string) {
		if strings.Contains(headerValue, "inbound-") {
			t.Skip("the extra header may not repeat the marker of the client's credential")
		}
		target := "/" + strings.TrimPrefix(path, "/")
		if query != "" {
			target += "?" + query
		}
		raw := "GET " + target + " HTTP/1.1\r\nHost: sidecar\r\n" +
			"Authorization: Bearer inbound-credential\r\n" +
			headerName + ": " + headerValue + "\r\n\r\n"
		in, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			t.Skip("not a request net/http would accept")
		}
		in.RemoteAddr = "127.0.0.1:50000"
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		in = in.WithContext(ctx)
		// Keep what the client sent: the proxy must not change the
		// caller's request.
		inPath, inQuery := in.URL.EscapedPath(), in.URL.RawQuery
		i := int(baseIndex) % len(bases)
		mu.Lock()
		got = nil
		mu.Unlock()

		rec := httptest.NewRecorder()
		proxies[i].ServeHTTP(rec, in)
		mu.Lock()
		out := got
		mu.Unlock()
		if rec.Code != http.StatusOK {
			if out != nil {
				t.Fatalf("the sidecar answered %d although the upstream received the request", rec.Code)
			}
			return
		}
		if out == nil {
			t.Fatal("the sidecar answered 200 but the upstream received nothing")
		}
		wantURI := strings.TrimSuffix(baseURLs[i].EscapedPath(), "/") + inPath
		if _, err := url.ParseQuery(inQuery); err != nil {
			// ReverseProxy drops query parameters that do not parse,
			// such as those with a semicolon, so that the upstream
			// cannot read the query differently from Go.
			gotPath, gotQuery, _ := strings.Cut(out.RequestURI, "?")
			if gotPath != wantURI {
				t.Errorf("upstream path = %q; want %q", gotPath, wantURI)
			}
			if _, err := url.ParseQuery(gotQuery); err != nil {
				t.Errorf("upstream query %q does not parse: %v", gotQuery, err)
			}
		} else if inQuery != "" || in.URL.ForceQuery {
			wantURI += "?" + inQuery
		}
		if _, err := url.ParseQuery(inQuery); err == nil && out.RequestURI != wantURI {
			t.Errorf("upstream request URI = %q; want %q (base %q, inbound %q)", out.RequestURI, wantURI, bases[i], target)
		}
		if out.Host != strings.TrimPrefix(upstream.URL, "http://") {
			t.Errorf("upstream Host = %q; want the upstream's", out.Host)
		}
		auth := out.Header.Values("Authorization")
		if len(auth) != 1 || auth[0] != "Bearer fuzz-token" {
			t.Errorf("upstream Authorization = %q; want exactly the sidecar's token", auth)
		}
		for name, values := range out.Header {
			for _, v := range values {
				if strings.Contains(v, "inbound-") {
					t.Errorf("upstream header %s = %q carries the client's credential", name, v)
				}
			}
		}
	})
}
