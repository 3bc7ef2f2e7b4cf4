package tokencache_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/authproxy/authproxy/internal/taskmaster"
	"github.com/authproxy/authproxy/tokencache"
)

const (
	clientID     = "app-1"
	clientSecret = "s3cret-value:with/odd%chars"
)

// startTaskmaster runs a local Taskmaster on loopback that issues tokens of
// the given lifetime.
func startTaskmaster(t *testing.T, lifetime time.Duration) (*taskmaster.Server, string) {
	t.Helper()
	tm := taskmaster.New(taskmaster.Config{
		Clients:       map[string]string{clientID: clientSecret},
		TokenLifetime: lifetime,
	})
	srv := httptest.NewServer(tm)
	t.Cleanup(srv.Close)
	return tm, srv.URL + "/api/auth/oauth2/token"
}

// newCache returns a cache for tokenURL with short timings, closed at the
// end of the test. Taskmaster cannot decode form-encoded Basic credentials,
// so the secret goes in the body.
func newCache(t *testing.T, tokenURL string, edit func(*tokencache.Config)) (*tokencache.Cache, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	cfg := tokencache.Config{
		Fetcher: &tokencache.ClientCredentials{
			TokenURL: tokenURL,
			ClientID: clientID,
			Secret:   tokencache.StaticSecret(clientSecret),
			Method:   tokencache.ClientSecretPost,
		},
		Timeout:               2 * time.Second,
		RefreshMinMargin:      300 * time.Millisecond,
		ExpiryLeeway:          100 * time.Millisecond,
		RetryMin:              50 * time.Millisecond,
		RetryMax:              200 * time.Millisecond,
		ForcedRefreshInterval: 500 * time.Millisecond,
		Logger:                zap.New(core),
	}
	if edit != nil {
		edit(&cfg)
	}
	c, err := tokencache.New(cfg)
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	t.Cleanup(c.Close)
	return c, logs
}

// runInBackground starts the refresh loop until the test ends.
func runInBackground(t *testing.T, c *tokencache.Cache) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { c.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func TestCache_ConcurrentColdGetsFetchOnce(t *testing.T) {
	tm, tokenURL := startTaskmaster(t, time.Hour)
	tm.SetLatency(200 * time.Millisecond)
	c, _ := newCache(t, tokenURL, nil)

	const callers = 100
	tokens := make([]*tokencache.Token, callers)
	errs := make([]error, callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-start
			tokens[i], errs[i] = c.Token(context.Background())
		})
	}
	close(start)
	wg.Wait()
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("Token() caller %d error = %v", i, errs[i])
		}
		if tokens[i] != tokens[0] {
			t.Errorf("caller %d got a different token than caller 0", i)
		}
	}
	if got := tm.TokenRequests(); got != 1 {
		t.Errorf("token requests = %d; want 1", got)
	}
}

func TestCache_CallerGivingUpDoesNotCancelFetch(t *testing.T) {
	tm, tokenURL := startTaskmaster(t, time.Hour)
	tm.SetLatency(300 * time.Millisecond)
	c, _ := newCache(t, tokenURL, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Token(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Token() with a short deadline error = %v; want context.DeadlineExceeded", err)
	}
	tok, err := c.Token(context.Background())
	if err != nil {
		t.Fatalf("Token() error = %v", err)
	}
	if tok == nil {
		t.Fatal("Token() = nil")
	}
	if got := tm.TokenRequests(); got != 1 {
		t.Errorf("token requests = %d; want 1, because the first caller's fetch went on", got)
	}
}

func TestCache_RefreshesBeforeExpiry(t *testing.T) {
	const lifetime = time.Second
	tm, tokenURL := startTaskmaster(t, lifetime)
	c, _ := newCache(t, tokenURL, nil)
	runInBackground(t, c)

	first, err := c.Token(context.Background())
	if err != nil {
		t.Fatalf("Token() error = %v", err)
	}
	// Sample the cache for several lifetimes: every read must be served at
	// once from the cache, by a token that is not about to expire.
	seen := map[*tokencache.Token]bool{}
	deadline := time.Now().Add(4 * lifetime)
	for time.Now().Before(deadline) {
		if !c.Ready() {
			t.Fatalf("Ready() = false at %v; the refresh came too late", time.Now())
		}
		began := time.Now()
		tok, err := c.Token(context.Background())
		if err != nil {
			t.Fatalf("Token() error = %v", err)
		}
		if waited := time.Since(began); waited > 50*time.Millisecond {
			t.Errorf("Token() took %v; a read of a valid token must not wait for a refresh", waited)
		}
		if !time.Now().Before(tok.UsableUntil) {
			t.Errorf("Token() returned a token past UsableUntil %v", tok.UsableUntil)
		}
		seen[tok] = true
		time.Sleep(10 * time.Millisecond)
	}
	if !seen[first] || len(seen) < 4 {
		t.Errorf("saw %d tokens over 4 lifetimes; want at least 4", len(seen))
	}
	// About one request per refresh, never one per read.
	if got := tm.TokenRequests(); got < 4 || got > 10 {
		t.Errorf("token requests = %d over 4 lifetimes; want 4 to 10", got)
	}
}

func TestCache_FailedRefreshKeepsValidToken(t *testing.T) {
	const lifetime = 1500 * time.Millisecond
	tm, tokenURL := startTaskmaster(t, lifetime)
	c, logs := newCache(t, tokenURL, nil)
	runInBackground(t, c)

	tok, err := c.Token(context.Background())
	if err != nil {
		t.Fatalf("Token() error = %v", err)
	}
	tm.FailTokenRequests(1000, 503, `{"error":"temporarily_unavailable"}`, "application/json")

	// Until UsableUntil the same token is served, although refreshes fail.
	for time.Until(tok.UsableUntil) > 50*time.Millisecond {
		got, err := c.Token(context.Background())
		if err != nil {
			t.Fatalf("Token() before expiry error = %v; a failed refresh must not drop a valid token", err)
		}
		if got != tok {
			t.Fatal("Token() returned a new token while every refresh failed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := logs.FilterMessage("token refresh failed; the current token is still valid").Len(); n == 0 {
		t.Error("no warning logged for a failed refresh while the token was valid")
	}

	// Past UsableUntil the token is never handed out.
	time.Sleep(time.Until(tok.UsableUntil) + 50*time.Millisecond)
	got, err := c.Token(context.Background())
	if err == nil {
		t.Fatalf("Token() after expiry = %v; want an error, never an expired token", got)
	}
	var noToken *tokencache.NoTokenError
	if !errors.As(err, &noToken) || !errors.Is(err, tokencache.ErrNoToken) {
		t.Fatalf("Token() after expiry error = %v; want a *NoTokenError", err)
	}
	if noToken.RetryAfter < time.Second {
		t.Errorf("RetryAfter = %v; want at least 1s", noToken.RetryAfter)
	}
	if c.Ready() {
		t.Error("Ready() = true after the token expired")
	}
	if n := logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n == 0 {
		t.Error("no error logged when the token expired without a refresh")
	}
}

func TestCache_RecoversAfterTokenEndpointOutage(t *testing.T) {
	tm, tokenURL := startTaskmaster(t, time.Hour)
	tm.FailTokenRequests(3, 500, "down", "text/plain")
	c, _ := newCache(t, tokenURL, nil)

	_, err := c.Token(context.Background())
	if !errors.Is(err, tokencache.ErrNoToken) {
		t.Fatalf("Token() during the outage error = %v; want ErrNoToken", err)
	}
	runInBackground(t, c)
	deadline := time.Now().Add(5 * time.Second)
	for !c.Ready() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !c.Ready() {
		t.Fatalf("Ready() = false 5s after the outage ended; status %+v", c.Status())
	}
	if got := tm.TokenRequests(); got != 4 {
		t.Errorf("token requests = %d; want 4 (3 failures, then success)", got)
	}
}

func TestCache_HonoursRetryAfter(t *testing.T) {
	tm, tokenURL := startTaskmaster(t, time.Hour)
	tm.RateLimitTokenRequests(1, 429, "2")
	c, _ := newCache(t, tokenURL, nil)
	runInBackground(t, c)

	began := time.Now()
	deadline := began.Add(5 * time.Second)
	for !c.Ready() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !c.Ready() {
		t.Fatal("Ready() = false 5s after a 429 with Retry-After: 2")
	}
	if took := time.Since(began); took < 2*time.Second {
		t.Errorf("got a token %v after a 429 with Retry-After: 2; want no retry sooner", took)
	}
	if got := tm.TokenRequests(); got != 2 {
		t.Errorf("token requests = %d; want 2", got)
	}
}

func TestCache_ConcurrentRejectsFetchOnce(t *testing.T) {
	tm, tokenURL := startTaskmaster(t, time.Hour)
	c, _ := newCache(t, tokenURL, nil)
	old, err := c.Token(context.Background())
	if err != nil {
		t.Fatalf("Token() error = %v", err)
	}
	tm.SetLatency(100 * time.Millisecond)

	const callers = 20
	fresh := make([]*tokencache.Token, callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-start
			var err error
			fresh[i], err = c.Reject(context.Background(), old)
			if err != nil {
				t.Errorf("Reject() error = %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	for i := range callers {
		if fresh[i] == old || fresh[i] != fresh[0] {
			t.Errorf("caller %d: Reject() did not return the one new token", i)
		}
	}
	if got := tm.TokenRequests(); got != 2 {
		t.Errorf("token requests = %d; want 2 (the first token and one refetch)", got)
	}
}

func TestCache_RejectIsRateLimited(t *testing.T) {
	tm, tokenURL := startTaskmaster(t, time.Hour)
	c, _ := newCache(t, tokenURL, func(cfg *tokencache.Config) { cfg.ForcedRefreshInterval = time.Hour })
	first, _ := c.Token(context.Background())
	second, err := c.Reject(context.Background(), first)
	if err != nil {
		t.Fatalf("first Reject() error = %v", err)
	}
	if _, err := c.Reject(context.Background(), second); !errors.Is(err, tokencache.ErrRefreshRateLimited) {
		t.Errorf("second Reject() error = %v; want ErrRefreshRateLimited", err)
	}
	if got := tm.TokenRequests(); got != 2 {
		t.Errorf("token requests = %d; want 2", got)
	}
	if tok, _ := c.Token(context.Background()); tok != second {
		t.Error("a rate-limited Reject() changed the served token")
	}
}

func TestCache_DefaultLifetimeWithoutExpiresIn(t *testing.T) {
	srv, _, _ := tokenServer(t, 200, "application/json", `{"access_token":"tok-1","token_type":"bearer"}`)
	c, logs := newCache(t, srv.URL, func(cfg *tokencache.Config) { cfg.DefaultLifetime = 7 * time.Minute })
	tok, err := c.Token(context.Background())
	if err != nil {
		t.Fatalf("Token() error = %v", err)
	}
	if tok.Lifetime != 7*time.Minute || !tok.LifetimeDefaulted {
		t.Errorf("Lifetime = %v (defaulted %v); want 7m, defaulted", tok.Lifetime, tok.LifetimeDefaulted)
	}
	if logs.FilterMessage("token response has no usable expires_in; assuming the default lifetime").Len() != 1 {
		t.Error("no log line about the default lifetime")
	}
	if got := tok.AuthorizationHeader(); len(got) != 1 || got[0] != "Bearer tok-1" {
		t.Errorf("AuthorizationHeader() = %q; want [Bearer tok-1]", got)
	}
}

func TestCache_TokenTypes(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		wantErr bool
	}{
		{"lowercase bearer", `{"access_token":"tok-1","token_type":"bearer","expires_in":60}`, false},
		{"uppercase bearer", `{"access_token":"tok-1","token_type":"BEARER","expires_in":60}`, false},
		{"missing type", `{"access_token":"tok-1","expires_in":60}`, false},
		{"mac type", `{"access_token":"tok-1","token_type":"mac","expires_in":60}`, true},
		{"token with a newline", `{"access_token":"tok-1\nX-Evil: 1","token_type":"bearer","expires_in":60}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _, _ := tokenServer(t, 200, "application/json", tt.body)
			c, _ := newCache(t, srv.URL, nil)
			tok, err := c.Token(context.Background())
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Token() = %v; want an error", tok)
				}
				return
			}
			if err != nil {
				t.Fatalf("Token() error = %v", err)
			}
			if got := tok.AuthorizationHeader()[0]; got != "Bearer tok-1" {
				t.Errorf("Authorization = %q; want %q", got, "Bearer tok-1")
			}
		})
	}
}

func TestCache_CredentialErrorIsLoggedWithoutSecret(t *testing.T) {
	tm, tokenURL := startTaskmaster(t, time.Hour)
	tm.SetClientSecret(clientID, "rotated")
	called := make(chan struct{}, 10)
	c, logs := newCache(t, tokenURL, func(cfg *tokencache.Config) {
		cfg.OnCredentialError = func() { called <- struct{}{} }
	})
	if _, err := c.Token(context.Background()); !tokencache.IsCredentialError(err) {
		t.Fatalf("Token() error = %v; want a credential error", err)
	}
	select {
	case <-called:
	default:
		t.Error("OnCredentialError was not called")
	}
	entries := logs.FilterMessage("token endpoint rejected the client credentials; check CLIENT_ID and the client secret").All()
	if len(entries) != 1 {
		t.Fatalf("credential error log lines = %d; want 1", len(entries))
	}
	fields := entries[0].ContextMap()
	if fields["oauth_error"] != "invalid_client" {
		t.Errorf("oauth_error = %v; want invalid_client", fields["oauth_error"])
	}
	if fields["oauth_error_description"] == "" {
		t.Error("oauth_error_description is empty")
	}
	for _, e := range logs.All() {
		for k, v := range e.ContextMap() {
			if s, ok := v.(string); ok && (strings.Contains(s, clientSecret) || strings.Contains(s, "rotated")) {
				t.Errorf("log field %s contains the secret: %q", k, s)
			}
		}
	}
	st := c.Status()
	if st.LastErrorCode != "invalid_client" || st.Valid {
		t.Errorf("Status() = %+v; want last_error_code invalid_client and not valid", st)
	}
}
