package tokencache

import (
	"fmt"
	"time"

	"go.uber.org/zap/zapcore"
)

// Token is an access token with the times that govern its use. A Token is
// immutable once the cache publishes it, so it is safe to share between
// goroutines. Its String and MarshalLogObject methods never reveal the token.
type Token struct {
	// authorization is the Authorization header value as a one-element
	// slice, built once so that requests can set the header without
	// allocating. Callers must not modify it.
	authorization []string

	// Obtained is when the token request was sent. The lifetime counts from
	// here, because the server counts it from when it generated the
	// response (RFC 6749 section 5.1), which is later.
	Obtained time.Time
	// Expiry is Obtained plus the lifetime the server granted.
	Expiry time.Time
	// UsableUntil is the last moment the cache hands the token out: Expiry
	// less the expiry leeway, so no request leaves with a token about to
	// lapse in flight.
	UsableUntil time.Time
	// RefreshAt is when the background refresh replaces the token.
	RefreshAt time.Time
	// Lifetime is the granted lifetime.
	Lifetime time.Duration
	// LifetimeDefaulted reports whether the server sent no usable
	// expires_in, so Lifetime is the configured default.
	LifetimeDefaulted bool
}

// AuthorizationHeader returns the header value "Bearer <token>" as a shared
// one-element slice, ready to assign to http.Header["Authorization"].
// Callers must not modify the slice or its element.
func (t *Token) AuthorizationHeader() []string { return t.authorization }

// String describes the token by its expiry, never by its value.
func (t *Token) String() string {
	if t == nil {
		return "<no token>"
	}
	return fmt.Sprintf("token(expires %s)", t.Expiry.UTC().Format(time.RFC3339))
}

// GoString keeps %#v from printing the token value.
func (t *Token) GoString() string { return t.String() }

// MarshalLogObject logs the token's times, never its value.
func (t *Token) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddTime("obtained", t.Obtained)
	enc.AddTime("expiry", t.Expiry)
	enc.AddTime("refresh_at", t.RefreshAt)
	enc.AddDuration("lifetime", t.Lifetime)
	enc.AddBool("lifetime_defaulted", t.LifetimeDefaulted)
	return nil
}
