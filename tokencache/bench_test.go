package tokencache

import (
	"context"
	"testing"
	"time"
)

// benchFetcher returns the same long-lived grant on every call.
type benchFetcher struct{}

func (benchFetcher) Fetch(context.Context) (*Grant, error) {
	return &Grant{AccessToken: "bench-access-token", TokenType: "Bearer", ExpiresIn: time.Hour}, nil
}

// newBenchCache returns a cache that already contains a token, so that Token
// takes its fast path.
func newBenchCache(b *testing.B) *Cache {
	b.Helper()
	c, err := New(Config{Fetcher: benchFetcher{}})
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	b.Cleanup(c.Close)
	if _, err := c.Token(context.Background()); err != nil {
		b.Fatalf("first Token: %v", err)
	}
	return c
}

func BenchmarkCache_Token(b *testing.B) {
	c := newBenchCache(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Token(ctx); err != nil {
			b.Fatalf("Token: %v", err)
		}
	}
}

func BenchmarkCache_TokenParallel(b *testing.B) {
	c := newBenchCache(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Token(ctx); err != nil {
				b.Errorf("Token: %v", err)
				return
			}
		}
	})
}
