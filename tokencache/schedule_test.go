package tokencache

import (
	"net/http"
	"testing"
	"time"
)

func TestRefreshDelay(t *testing.T) {
	tests := []struct {
		name     string
		lifetime time.Duration
		jitter   float64
		want     time.Duration
	}{
		{"hour token reused for 80%", time.Hour, 0, 48 * time.Minute},
		{"hour token with full jitter", time.Hour, 1, 45 * time.Minute},
		{"minute token reused for 80%", time.Minute, 0, 48 * time.Second},
		{"minute token with full jitter", time.Minute, 1, 45 * time.Second},
		{"margin wins for 30s token", 30 * time.Second, 0, 20 * time.Second},
		{"margin capped at half life", 10 * time.Second, 0, 5 * time.Second},
		{"two second token", 2 * time.Second, 0, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := refreshDelay(tt.lifetime, 0.8, 10*time.Second, tt.jitter).Round(time.Millisecond)
			if got != tt.want {
				t.Errorf("refreshDelay(%v) = %v; want %v", tt.lifetime, got, tt.want)
			}
		})
	}
}

func TestExpiryLeeway(t *testing.T) {
	if got := expiryLeeway(time.Hour, 5*time.Second); got != 5*time.Second {
		t.Errorf("expiryLeeway(1h) = %v; want 5s", got)
	}
	if got := expiryLeeway(2*time.Second, 5*time.Second); got != 500*time.Millisecond {
		t.Errorf("expiryLeeway(2s) = %v; want 500ms", got)
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		failures int
		jitter   float64
		want     time.Duration
	}{
		{1, 1, time.Second},
		{1, 0, 500 * time.Millisecond},
		{2, 1, 2 * time.Second},
		{4, 1, 8 * time.Second},
		{5, 1, 16 * time.Second},
		{6, 1, 30 * time.Second},
		{60, 1, 30 * time.Second},
		{60, 0, 15 * time.Second},
	}
	for _, tt := range tests {
		got := backoff(tt.failures, time.Second, 30*time.Second, tt.jitter)
		// jitter 1 is never drawn; values just below it give just below d.
		if tt.jitter == 1 {
			got = backoff(tt.failures, time.Second, 30*time.Second, 0.999999999)
			got = got.Round(time.Millisecond)
		}
		if got != tt.want {
			t.Errorf("backoff(%d, jitter %v) = %v; want %v", tt.failures, tt.jitter, got, tt.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		value string
		want  time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{"0", 0},
		{"-3", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.value, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v; want %v", tt.value, got, tt.want)
		}
	}
}

func TestExpiresIn(t *testing.T) {
	tests := []struct {
		value any
		want  time.Duration
	}{
		{float64(3600), time.Hour},
		{"3599", 3599 * time.Second},
		{" 60 ", time.Minute},
		{"soon", 0},
		{nil, 0},
		{float64(0), 0},
		{float64(-5), 0},
		{true, 0},
	}
	for _, tt := range tests {
		if got := expiresIn(tt.value); got != tt.want {
			t.Errorf("expiresIn(%#v) = %v; want %v", tt.value, got, tt.want)
		}
	}
}

func TestSanitize(t *testing.T) {
	tests := []struct {
		name, in, secret, want string
	}{
		{"secret removed", "bad secret s3cr3t here", "s3cr3t", "bad secret [REDACTED] here"},
		{"json token removed", `{"access_token":"abc123","x":1}`, "", `{"access_token":"[REDACTED]","x":1}`},
		{"form secret removed", "client_id=a&client_secret=zzz&grant_type=x", "", "client_id=a&client_secret=[REDACTED]&grant_type=x"},
		{"control characters replaced", "a\nb\tc", "", "a b c"},
		{"long text cut", "0123456789abc", "", "0123456789..."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit := 200
			if tt.name == "long text cut" {
				limit = 10
			}
			if got := sanitize(tt.in, tt.secret, limit); got != tt.want {
				t.Errorf("sanitize(%q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}
