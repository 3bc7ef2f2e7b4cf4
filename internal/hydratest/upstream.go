package hydratest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// Upstream is a resource server for tests: it returns 200 only for requests
// whose bearer token Hydra reports as active, and counts what it accepted and
// rejected. Its methods are safe for concurrent use.
type Upstream struct {
	server *httptest.Server
	hydra  *Hydra

	mu                sync.Mutex
	accepted          int
	rejected          int
	errors            int
	lastIntrospection Introspection
	lastRequest       *http.Request
}

// UpstreamResponse is the JSON body that Upstream returns with 200.
type UpstreamResponse struct {
	Method   string   `json:"method"`
	Path     string   `json:"path"`
	Query    string   `json:"query,omitempty"`
	ClientID string   `json:"client_id"`
	Scopes   []string `json:"scopes"`
	Audience []string `json:"audience"`
}

// NewIntrospectingUpstream starts an Upstream on 127.0.0.1 that checks bearer
// tokens against h, and closes it with t.Cleanup. For every request it
// introspects the token of the "Authorization: Bearer" header and returns:
//   - 200 with an UpstreamResponse when the token is active;
//   - 401 with `WWW-Authenticate: Bearer error="invalid_token"` when it is
//     not active;
//   - 401 with `WWW-Authenticate: Bearer` and no error code when the request
//     has no bearer token, as RFC 6750 section 3.1 recommends;
//   - 503 when introspection fails, which counts as neither accepted nor
//     rejected.
func NewIntrospectingUpstream(t testing.TB, h *Hydra) *Upstream {
	t.Helper()
	u := &Upstream{hydra: h}
	u.server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.serve(t, w, r)
	}))
	// httptest listens on 127.0.0.1 unless the -httptest.serve flag is set.
	u.server.Start()
	t.Cleanup(u.server.Close)
	return u
}

// URL returns the base URL of the upstream, such as http://127.0.0.1:40123.
func (u *Upstream) URL() string { return u.server.URL }

// Accepted returns the number of requests that got status 200.
func (u *Upstream) Accepted() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.accepted
}

// Rejected returns the number of requests that got status 401.
func (u *Upstream) Rejected() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.rejected
}

// Errors returns the number of requests that got status 503 because
// introspection failed.
func (u *Upstream) Errors() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.errors
}

// LastIntrospection returns the introspection result of the most recent
// request that carried a bearer token, active or not. It returns false when
// no such request has arrived.
func (u *Upstream) LastIntrospection() (Introspection, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.lastIntrospection, u.lastRequest != nil
}

// LastRequest returns a copy of the most recent request with a bearer token,
// without its body, or nil when none has arrived.
func (u *Upstream) LastRequest() *http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.lastRequest == nil {
		return nil
	}
	return u.lastRequest.Clone(u.lastRequest.Context())
}

func (u *Upstream) serve(t testing.TB, w http.ResponseWriter, r *http.Request) {
	token, ok := bearerToken(r)
	if !ok {
		u.count(&u.rejected)
		w.Header().Set("WWW-Authenticate", "Bearer")
		http.Error(w, "missing bearer token", http.StatusUnauthorized)
		return
	}

	result, err := u.hydra.Introspect(r.Context(), token)
	if err != nil {
		u.count(&u.errors)
		t.Logf("hydratest: upstream: %s %s: %v", r.Method, r.URL.Path, err)
		http.Error(w, "token introspection failed", http.StatusServiceUnavailable)
		return
	}

	saved := r.Clone(r.Context())
	saved.Body = http.NoBody
	u.mu.Lock()
	u.lastIntrospection = result
	u.lastRequest = saved
	if result.Active {
		u.accepted++
	} else {
		u.rejected++
	}
	u.mu.Unlock()

	if !result.Active {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="the access token is not active"`)
		http.Error(w, "invalid token", http.StatusUnauthorized)
		return
	}

	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(UpstreamResponse{
		Method:   r.Method,
		Path:     r.URL.Path,
		Query:    r.URL.RawQuery,
		ClientID: result.ClientID,
		Scopes:   result.Scopes(),
		Audience: result.Audience,
	})
}

func (u *Upstream) count(counter *int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	*counter++
}

// bearerToken returns the token of an "Authorization: Bearer" header. The
// scheme is case-insensitive (RFC 7235 section 2.1).
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
