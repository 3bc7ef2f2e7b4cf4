package tokencache

import (
	"errors"
	"time"
)

// Status is a snapshot of the cache for operators. It never contains the
// token or the client secret.
type Status struct {
	Valid               bool       `json:"valid"`
	Obtained            *time.Time `json:"obtained,omitempty"`
	Expiry              *time.Time `json:"expiry,omitempty"`
	RefreshAt           *time.Time `json:"refresh_at,omitempty"`
	LifetimeDefaulted   bool       `json:"lifetime_defaulted,omitempty"`
	LastAttempt         *time.Time `json:"last_attempt,omitempty"`
	LastSuccess         *time.Time `json:"last_success,omitempty"`
	LastOutcome         string     `json:"last_outcome,omitempty"`
	LastErrorCode       string     `json:"last_error_code,omitempty"`
	LastErrorDesc       string     `json:"last_error_description,omitempty"`
	LastError           string     `json:"last_error,omitempty"`
	ConsecutiveFailures int        `json:"consecutive_failures"`
	NextAttempt         *time.Time `json:"next_attempt,omitempty"`
}

// Status returns a snapshot of the cache.
func (c *Cache) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Status{
		Valid:               c.usable.Load() != nil,
		LastAttempt:         timePtr(c.lastAttempt),
		LastSuccess:         timePtr(c.lastSuccess),
		ConsecutiveFailures: c.failures,
		NextAttempt:         timePtr(c.nextAttempt),
	}
	if t := c.latest; t != nil {
		s.Obtained = timePtr(t.Obtained)
		s.Expiry = timePtr(t.Expiry)
		s.RefreshAt = timePtr(t.RefreshAt)
		s.LifetimeDefaulted = t.LifetimeDefaulted
	}
	switch {
	case c.lastErr != nil:
		s.LastOutcome = "failure"
		s.LastErrorCode = c.lastErr.Label()
		s.LastErrorDesc = c.lastErr.Description
		s.LastError = c.lastErr.Error()
	case c.latest != nil:
		s.LastOutcome = "success"
	}
	return s
}

// CredentialsChanged reports that the client credentials changed, for
// example because the secret file was rewritten. If the last request failed
// on credentials or no token is held, it requests a new token at once.
func (c *Cache) CredentialsChanged() {
	c.mu.Lock()
	retry := c.usable.Load() == nil || (c.lastErr != nil && c.lastErr.IsCredentialError())
	c.mu.Unlock()
	if retry {
		c.RequestRefresh()
	}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// IsCredentialError reports whether err is a token request that the server
// rejected because of the client's credentials.
func IsCredentialError(err error) bool {
	var fe *FetchError
	return errors.As(err, &fe) && fe.IsCredentialError()
}
