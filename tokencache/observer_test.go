package tokencache_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/authproxy/authproxy/tokencache"
)

// recordingObserver keeps the events a cache reports.
type recordingObserver struct {
	mu     sync.Mutex
	valid  bool
	forced map[string]int
}

func (o *recordingObserver) FetchDone(string, string, time.Duration) {}

func (o *recordingObserver) TokenChanged(t *tokencache.Token) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.valid = t != nil
}

func (o *recordingObserver) ForcedRefresh(result string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.forced == nil {
		o.forced = map[string]int{}
	}
	o.forced[result]++
}

func (o *recordingObserver) snapshot() (bool, map[string]int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	forced := map[string]int{}
	for k, v := range o.forced {
		forced[k] = v
	}
	return o.valid, forced
}

func TestCache_ExpiryDuringForcedRefreshReportsNoToken(t *testing.T) {
	tm, tokenURL := startTaskmaster(t, 1200*time.Millisecond)
	obs := &recordingObserver{}
	c, _ := newCache(t, tokenURL, func(cfg *tokencache.Config) {
		cfg.Observer = obs
		cfg.Timeout = 5 * time.Second
	})
	tok, err := c.Token(context.Background())
	if err != nil {
		t.Fatalf("Token() error = %v", err)
	}
	// The forced refresh is still waiting for the token endpoint when the
	// rejected token expires.
	tm.SetLatency(3 * time.Second)
	tm.SetTokenLifetime(time.Hour)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.Reject(context.Background(), tok)
	}()
	time.Sleep(time.Until(tok.UsableUntil) + 100*time.Millisecond)
	if valid, _ := obs.snapshot(); valid {
		t.Error("observer still reports a valid token after it expired during a forced refresh")
	}
	if c.Ready() {
		t.Error("Ready() = true after the token expired")
	}
	<-done
	if valid, _ := obs.snapshot(); !valid {
		t.Error("observer reports no token after the forced refresh succeeded")
	}
}

func TestCache_RequestRefreshIsCounted(t *testing.T) {
	tm, tokenURL := startTaskmaster(t, time.Hour)
	obs := &recordingObserver{}
	c, _ := newCache(t, tokenURL, func(cfg *tokencache.Config) {
		cfg.Observer = obs
		cfg.ForcedRefreshInterval = time.Hour
	})
	runInBackground(t, c)
	first, err := c.Token(context.Background())
	if err != nil {
		t.Fatalf("Token() error = %v", err)
	}
	if !c.RequestRefresh() {
		t.Fatal("RequestRefresh() = false; want the first request accepted")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		tok, _ := c.Token(context.Background())
		if tok != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no new token 5s after RequestRefresh()")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c.RequestRefresh() {
		t.Error("second RequestRefresh() = true; want it rate-limited")
	}
	_, forced := obs.snapshot()
	if forced["refreshed"] != 1 || forced["rate_limited"] != 1 {
		t.Errorf("forced refreshes = %v; want refreshed 1 and rate_limited 1", forced)
	}
	if got := tm.TokenRequests(); got != 2 {
		t.Errorf("token requests = %d; want 2", got)
	}
}
