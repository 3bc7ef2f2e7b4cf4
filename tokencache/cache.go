package tokencache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// ErrNoToken reports that no valid token is available. Errors returned by
// [Cache.Token] match it with errors.Is; they are *NoTokenError values.
var ErrNoToken = errors.New("tokencache: no valid token")

// ErrRefreshRateLimited reports that a forced refresh was skipped because
// another one ran less than the forced refresh interval ago.
var ErrRefreshRateLimited = errors.New("tokencache: forced refresh rate-limited")

// NoTokenError is returned when no valid token is available.
type NoTokenError struct {
	// RetryAfter is when the next token request is due, at least one second.
	RetryAfter time.Duration
	// Cause is the last fetch error, if any.
	Cause error
}

func (e *NoTokenError) Error() string {
	if e.Cause == nil {
		return ErrNoToken.Error()
	}
	return ErrNoToken.Error() + ": " + e.Cause.Error()
}

// Is makes errors.Is(err, ErrNoToken) true.
func (e *NoTokenError) Is(target error) bool { return target == ErrNoToken }

func (e *NoTokenError) Unwrap() error { return e.Cause }

// Observer receives the cache's events, typically to update metrics. Its
// methods must be fast and safe for concurrent use.
type Observer interface {
	// FetchDone reports one token request: outcome is "success" or
	// "failure", and errorCode a bounded label (see [FetchError.Label]).
	FetchDone(outcome, errorCode string, took time.Duration)
	// TokenChanged reports the token now served, or nil when none is.
	TokenChanged(t *Token)
	// ForcedRefresh reports a forced refresh: "refreshed", "rate_limited"
	// or "failed".
	ForcedRefresh(result string)
}

// Config configures a [Cache]. Zero durations take the documented defaults.
type Config struct {
	// Fetcher performs the token requests. Required.
	Fetcher Fetcher
	// Timeout bounds one token request. Default: 10s.
	Timeout time.Duration
	// DefaultLifetime applies when a response has no usable expires_in.
	// Default: 5m.
	DefaultLifetime time.Duration
	// RefreshRatio is the share of the lifetime a token is reused before the
	// background refresh. Default: 0.8.
	RefreshRatio float64
	// RefreshMinMargin is the least time before expiry at which the refresh
	// runs, capped at half the lifetime. Default: 10s.
	RefreshMinMargin time.Duration
	// ExpiryLeeway is how long before expiry a token stops being handed out,
	// capped at a quarter of the lifetime. Default: 5s.
	ExpiryLeeway time.Duration
	// RetryMin and RetryMax bound the exponential backoff after a failed
	// request. Defaults: 1s and 30s.
	RetryMin, RetryMax time.Duration
	// ForcedRefreshInterval is the least time between forced refreshes
	// (after an upstream 401 or on request). Default: 5s.
	ForcedRefreshInterval time.Duration
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// Observer, if set, receives fetch and token events.
	Observer Observer
	// OnCredentialError, if set, runs after the server rejects the client
	// credentials, for example to re-read a secret file.
	OnCredentialError func()
}

// maxRetryAfter caps how long a server's Retry-After can delay the next
// token request.
const maxRetryAfter = 10 * time.Minute

// Cache holds the current token and refreshes it. It is safe for
// concurrent use. Call [Cache.Run] to refresh in the background and
// [Cache.Close] to stop.
type Cache struct {
	cfg      Config
	log      *zap.Logger
	observer Observer

	// ctx is the parent of every token request; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	// fetches counts running token requests so that Close can wait for them.
	fetches sync.WaitGroup

	// usable is the token handed to callers, or nil. A timer clears it when
	// the token's UsableUntil passes, so reading it needs no clock.
	usable atomic.Pointer[Token]
	group  singleflight.Group
	// wake prompts the refresh loop to recompute its schedule.
	wake chan struct{}

	// mu guards the fields below.
	mu          sync.Mutex
	latest      *Token
	expiryTimer *time.Timer
	failures    int
	nextAttempt time.Time
	lastAttempt time.Time
	lastSuccess time.Time
	lastErr     *FetchError
	lastForced  time.Time
	forceNext   bool
}

// New returns a cache that fetches with cfg.Fetcher. It sends no request
// until the first [Cache.Token] call or until [Cache.Run] starts.
func New(cfg Config) (*Cache, error) {
	if cfg.Fetcher == nil {
		return nil, errors.New("tokencache: Config.Fetcher is nil")
	}
	setDefaults(&cfg)
	if cfg.RefreshRatio <= 0 || cfg.RefreshRatio >= 1 {
		return nil, fmt.Errorf("tokencache: RefreshRatio %v is outside (0, 1)", cfg.RefreshRatio)
	}
	if cfg.RetryMin > cfg.RetryMax {
		return nil, fmt.Errorf("tokencache: RetryMin %v exceeds RetryMax %v", cfg.RetryMin, cfg.RetryMax)
	}
	c := &Cache{
		cfg:      cfg,
		log:      cfg.Logger,
		observer: cfg.Observer,
		wake:     make(chan struct{}, 1),
	}
	if c.observer == nil {
		c.observer = nopObserver{}
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

func setDefaults(cfg *Config) {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.Timeout, 10*time.Second)
	def(&cfg.DefaultLifetime, 5*time.Minute)
	def(&cfg.RefreshMinMargin, 10*time.Second)
	def(&cfg.ExpiryLeeway, 5*time.Second)
	def(&cfg.RetryMin, time.Second)
	def(&cfg.RetryMax, 30*time.Second)
	def(&cfg.ForcedRefreshInterval, 5*time.Second)
	if cfg.RefreshRatio == 0 {
		cfg.RefreshRatio = 0.8
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
}

// Token returns a valid token. While one is cached it returns at once,
// without locking or allocating. Otherwise it waits for the shared token
// request, or returns a *NoTokenError at once while failed requests are
// backing off. If ctx ends first, Token returns ctx.Err() and the shared
// request goes on.
func (c *Cache) Token(ctx context.Context) (*Token, error) {
	if t := c.usable.Load(); t != nil {
		return t, nil
	}
	return c.wait(ctx)
}

// Ready reports whether a valid token is held.
func (c *Cache) Ready() bool { return c.usable.Load() != nil }

func (c *Cache) wait(ctx context.Context) (*Token, error) {
	c.mu.Lock()
	next, lastErr := c.nextAttempt, c.lastErr
	c.mu.Unlock()
	if wait := time.Until(next); wait > 0 {
		return nil, &NoTokenError{RetryAfter: atLeastSecond(wait), Cause: errOrNil(lastErr)}
	}
	select {
	case r := <-c.group.DoChan("token", c.fetchOnce):
		if r.Err != nil {
			return nil, &NoTokenError{RetryAfter: c.retryAfter(), Cause: r.Err}
		}
		return r.Val.(*Token), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Reject reports that the upstream refused rejected with a 401 and returns
// a replacement. If rejected is no longer the current token, it returns the
// current one without a new request, so many concurrent 401s cause one
// fetch. Forced fetches are spaced at least ForcedRefreshInterval apart:
// within it, Reject returns ErrRefreshRateLimited. If the fetch fails, the
// rejected token is served again until it expires, because the upstream
// may have refused it for another reason, and Reject returns the error.
func (c *Cache) Reject(ctx context.Context, rejected *Token) (*Token, error) {
	c.mu.Lock()
	if c.usable.Load() != rejected {
		c.mu.Unlock()
		return c.Token(ctx)
	}
	if since := time.Since(c.lastForced); since < c.cfg.ForcedRefreshInterval {
		c.mu.Unlock()
		c.observer.ForcedRefresh("rate_limited")
		return nil, ErrRefreshRateLimited
	}
	c.lastForced = time.Now()
	c.usable.Store(nil)
	c.mu.Unlock()
	c.log.Info("upstream rejected the token; fetching a new one", zap.Object("token", rejected))

	select {
	case r := <-c.group.DoChan("token", c.fetchOnce):
		if r.Err != nil {
			c.observer.ForcedRefresh("failed")
			c.restore(rejected)
			return nil, r.Err
		}
		c.observer.ForcedRefresh("refreshed")
		return r.Val.(*Token), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// restore serves t again after a failed forced refresh, unless it is no
// longer the latest token or its expiry timer has already run.
func (c *Cache) restore(t *Token) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.latest == t && time.Now().Before(t.UsableUntil) {
		c.usable.CompareAndSwap(nil, t)
	}
}

// RequestRefresh schedules a token request now, for example after the client
// secret changed. Like a forced refresh after a 401, it is skipped when
// another ran less than ForcedRefreshInterval ago; it reports whether the
// refresh was scheduled. It clears any backoff, because the cause of the
// last failure may be gone.
func (c *Cache) RequestRefresh() bool {
	c.mu.Lock()
	if time.Since(c.lastForced) < c.cfg.ForcedRefreshInterval {
		c.mu.Unlock()
		c.observer.ForcedRefresh("rate_limited")
		return false
	}
	c.lastForced = time.Now()
	c.forceNext = true
	c.nextAttempt = time.Time{}
	c.mu.Unlock()
	c.poke()
	return true
}

// Run refreshes the token in the background until ctx ends: at once when
// none is held, at the token's RefreshAt, and after failures at the backoff
// time. It returns when ctx ends.
func (c *Cache) Run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-c.wake:
		}
		if d := c.untilDue(); d > 0 {
			timer.Reset(d)
			continue
		}
		select {
		case <-c.group.DoChan("token", c.fetchOnce):
		case <-ctx.Done():
			return
		}
		timer.Reset(max(c.untilDue(), 0))
	}
}

// Close cancels any token request in flight, waits for it to return and
// stops the expiry timer. The cache serves no token afterwards.
func (c *Cache) Close() {
	c.cancel()
	c.fetches.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expiryTimer != nil {
		c.expiryTimer.Stop()
	}
	c.usable.Store(nil)
}

// untilDue returns the time left before the next token request is due.
func (c *Cache) untilDue() time.Duration {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	due := now
	if t := c.usable.Load(); t != nil && !c.forceNext {
		due = t.RefreshAt
	}
	if c.nextAttempt.After(due) {
		due = c.nextAttempt
	}
	return due.Sub(now)
}

// fetchOnce runs inside the singleflight group. A caller that joins after
// another fetch just finished gets that token instead of sending a request.
func (c *Cache) fetchOnce() (any, error) {
	c.mu.Lock()
	force := c.forceNext
	c.forceNext = false
	c.mu.Unlock()
	if t := c.usable.Load(); t != nil && !force && time.Now().Before(t.RefreshAt) {
		return t, nil
	}
	t, err := c.fetch()
	if force {
		if err != nil {
			c.observer.ForcedRefresh("failed")
		} else {
			c.observer.ForcedRefresh("refreshed")
		}
	}
	if err != nil {
		return nil, err
	}
	return t, nil
}

// fetch sends one token request and publishes the token or records the
// failure.
func (c *Cache) fetch() (*Token, error) {
	c.fetches.Add(1)
	defer c.fetches.Done()
	if c.ctx.Err() != nil {
		return nil, fmt.Errorf("token cache closed: %w", c.ctx.Err())
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.Timeout)
	defer cancel()
	sent := time.Now()
	c.mu.Lock()
	c.lastAttempt = sent
	c.mu.Unlock()

	grant, err := c.cfg.Fetcher.Fetch(ctx)
	took := time.Since(sent)
	var t *Token
	if err == nil {
		t, err = c.newToken(grant, sent)
	}
	if err != nil {
		if c.ctx.Err() != nil {
			return nil, fmt.Errorf("token cache closed: %w", c.ctx.Err())
		}
		return nil, c.fail(err, took)
	}
	c.publish(t, took)
	return t, nil
}

// newToken checks a grant and computes its schedule.
func (c *Cache) newToken(g *Grant, sent time.Time) (*Token, error) {
	switch {
	case g.TokenType == "":
		c.log.Warn("token response has no token_type; sending the token as Bearer")
	case strings.EqualFold(g.TokenType, "bearer"):
	default:
		// RFC 6749 section 7.1: a client must not use a token whose type
		// it does not understand.
		return nil, &FetchError{Kind: KindBadResponse, Err: fmt.Errorf(
			"unsupported token_type %q: only Bearer tokens (RFC 6750) can be sent", g.TokenType)}
	}
	if !validTokenValue(g.AccessToken) {
		return nil, &FetchError{Kind: KindBadResponse, Err: errors.New(
			"access_token contains characters that are not allowed in an HTTP header")}
	}

	lifetime, defaulted := g.ExpiresIn, false
	if lifetime <= 0 {
		lifetime, defaulted = c.cfg.DefaultLifetime, true
	}
	t := &Token{
		authorization:     []string{"Bearer " + g.AccessToken},
		Obtained:          sent,
		Expiry:            sent.Add(lifetime),
		Lifetime:          lifetime,
		LifetimeDefaulted: defaulted,
	}

	t.UsableUntil = t.Expiry.Add(-expiryLeeway(lifetime, c.cfg.ExpiryLeeway))
	t.RefreshAt = sent.Add(refreshDelay(lifetime, c.cfg.RefreshRatio, c.cfg.RefreshMinMargin, randomFraction()))
	if !t.RefreshAt.Before(t.UsableUntil) {
		t.RefreshAt = sent.Add(t.UsableUntil.Sub(sent) / 2)
	}
	if !time.Now().Before(t.UsableUntil) {
		return nil, &FetchError{Kind: KindBadResponse, Err: fmt.Errorf(
			"token lifetime %v was used up before the response arrived", lifetime)}
	}
	if defaulted {
		c.log.Info("token response has no usable expires_in; assuming the default lifetime",
			zap.Duration("lifetime", lifetime))
	}
	return t, nil
}

// validTokenValue reports whether v can go in a header: non-empty, printable
// ASCII, no spaces.
func validTokenValue(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] >= 0x7f {
			return false
		}
	}
	return true
}

// publish makes t the served token and arms its expiry timer.
func (c *Cache) publish(t *Token, took time.Duration) {
	c.mu.Lock()
	first := c.latest == nil
	recovered := !first && c.usable.Load() == nil
	c.latest = t
	c.failures = 0
	c.nextAttempt = time.Time{}
	c.lastErr = nil
	c.lastSuccess = time.Now()
	if c.expiryTimer != nil {
		c.expiryTimer.Stop()
	}
	c.expiryTimer = time.AfterFunc(time.Until(t.UsableUntil), func() { c.expire(t) })
	c.usable.Store(t)
	c.observer.TokenChanged(t)
	c.mu.Unlock()

	c.observer.FetchDone("success", "", took)
	switch {
	case first:
		c.log.Info("obtained first token", zap.Object("token", t), zap.Duration("took", took))
	case recovered:
		c.log.Info("obtained a token after a period without one", zap.Object("token", t))
	default:
		c.log.Debug("refreshed token", zap.Object("token", t), zap.Duration("took", took))
	}
	c.poke()
}

// expire stops serving t once its UsableUntil has passed.
func (c *Cache) expire(t *Token) {
	c.mu.Lock()
	swapped := c.usable.CompareAndSwap(t, nil)
	// A forced refresh may have dropped t already and still be running: t
	// is then still the latest token, and it has now expired as well.
	expired := swapped || (c.latest == t && c.usable.Load() == nil)
	if expired {
		c.observer.TokenChanged(nil)
	}
	lastErr := c.lastErr
	c.mu.Unlock()
	if !expired {
		return
	}
	c.log.Error("token expired without a successful refresh; requests get 503 until a token is obtained",
		zap.Object("token", t), zap.Error(errOrNil(lastErr)))
	c.poke()
}

// fail records a failed request, schedules the retry and logs it.
func (c *Cache) fail(err error, took time.Duration) error {
	var fe *FetchError
	if !errors.As(err, &fe) {
		fe = &FetchError{Kind: KindNetwork, Err: err}
	}
	credential := fe.IsCredentialError()
	c.mu.Lock()
	c.failures++
	failures := c.failures
	delay := backoff(failures, c.cfg.RetryMin, c.cfg.RetryMax, randomFraction())
	if credential {
		// Retrying a rejected secret fails the same way until it changes,
		// so back off eight times longer, up to four times RetryMax. A
		// secret change or a refresh request clears the backoff.
		delay = backoff(failures+3, c.cfg.RetryMin, 4*c.cfg.RetryMax, randomFraction())
	}
	if fe.RetryAfter > delay {
		delay = min(fe.RetryAfter, maxRetryAfter)
	}
	c.nextAttempt = time.Now().Add(delay)
	c.lastErr = fe
	valid := c.usable.Load() != nil
	c.mu.Unlock()

	c.observer.FetchDone("failure", fe.Label(), took)
	fields := []zap.Field{
		zap.Error(fe), zap.String("error_code", fe.Label()), zap.Int("failures", failures),
		zap.Duration("retry_in", delay),
	}
	switch {
	case credential:
		c.log.Error("token endpoint rejected the client credentials; check CLIENT_ID and the client secret",
			append(fields, zap.String("oauth_error", fe.Code), zap.String("oauth_error_description", fe.Description))...)
	case valid:
		c.log.Warn("token refresh failed; the current token is still valid", fields...)
	default:
		c.log.Error("token request failed and no valid token is held", fields...)
	}
	if credential && c.cfg.OnCredentialError != nil {
		c.cfg.OnCredentialError()
	}
	return fe
}

// retryAfter returns the time until the next token request, at least one
// second.
func (c *Cache) retryAfter() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return atLeastSecond(time.Until(c.nextAttempt))
}

func (c *Cache) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func atLeastSecond(d time.Duration) time.Duration {
	return max(d.Round(time.Second), time.Second)
}

// errOrNil avoids a non-nil error interface holding a nil *FetchError.
func errOrNil(fe *FetchError) error {
	if fe == nil {
		return nil
	}
	return fe
}

type nopObserver struct{}

func (nopObserver) FetchDone(string, string, time.Duration) {}
func (nopObserver) TokenChanged(*Token)                     {}
func (nopObserver) ForcedRefresh(string)                    {}
