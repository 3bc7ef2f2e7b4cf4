package taskmaster

import (
	"net/http"
	"time"
)

// injectedFailure is a canned response for the next remaining token requests.
type injectedFailure struct {
	remaining   int
	status      int
	body        string
	contentType string
}

// injectedRateLimit is a rate-limit response for the next remaining token
// requests.
type injectedRateLimit struct {
	remaining  int
	status     int
	retryAfter string
}

// writeInjectedTokenResponse sends an injected rate-limit or failure response
// if one is pending and reports whether it did. A pending rate limit goes
// first.
func (s *Server) writeInjectedTokenResponse(w http.ResponseWriter) bool {
	s.mu.Lock()
	var (
		rateLimit injectedRateLimit
		failure   injectedFailure
	)
	switch {
	case s.tokenRateLimit.remaining > 0:
		s.tokenRateLimit.remaining--
		rateLimit = s.tokenRateLimit
	case s.tokenFailure.remaining > 0:
		s.tokenFailure.remaining--
		failure = s.tokenFailure
	}
	s.mu.Unlock()

	switch {
	case rateLimit.status != 0:
		if rateLimit.retryAfter != "" {
			w.Header().Set("Retry-After", rateLimit.retryAfter)
		}
		writeJSON(w, rateLimit.status, messageResponse{Message: http.StatusText(rateLimit.status)})
		return true
	case failure.status != 0:
		if failure.contentType != "" {
			w.Header().Set("Content-Type", failure.contentType)
		}
		w.WriteHeader(failure.status)
		_, _ = w.Write([]byte(failure.body))
		return true
	}
	return false
}

// SetLatency sets the delay before the token endpoint handles each request.
// A request whose context ends during the delay is handled at that moment.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenLatency = d
}

// SetAPILatency sets the delay before the resource API handles each request.
func (s *Server) SetAPILatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apiLatency = d
}

// FailTokenRequests makes the next n token requests receive status with the
// given body and Content-Type instead of being handled. An empty contentType
// sends no Content-Type header. It replaces any pending failure, and n <= 0
// cancels it. A pending RateLimitTokenRequests response is sent first.
func (s *Server) FailTokenRequests(n int, status int, body string, contentType string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 {
		s.tokenFailure = injectedFailure{}
		return
	}
	s.tokenFailure = injectedFailure{remaining: n, status: status, body: body, contentType: contentType}
}

// RateLimitTokenRequests makes the next n token requests receive status
// (normally 429 or 503) with a JSON body and, unless retryAfter is empty, a
// Retry-After header set to retryAfter verbatim, which may be delay-seconds or
// an HTTP date. It replaces any pending rate limit, and n <= 0 cancels it.
func (s *Server) RateLimitTokenRequests(n int, status int, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 {
		s.tokenRateLimit = injectedRateLimit{}
		return
	}
	s.tokenRateLimit = injectedRateLimit{remaining: n, status: status, retryAfter: retryAfter}
}

// SetTokenLifetime sets the lifetime of tokens issued from now on. Tokens
// already issued keep their expiry. The server expires a token after exactly
// d, while expires_in carries whole seconds: a lifetime under one second is
// sent as 1, and d <= 0 issues tokens that are already expired, with
// expires_in 0.
func (s *Server) SetTokenLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenLifetime = max(d, 0)
}

// SetInvalidClientStatus sets the status for a wrong client id or secret.
// Only http.StatusUnauthorized selects 401, and any other value selects 400.
func (s *Server) SetInvalidClientStatus(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if status == http.StatusUnauthorized {
		s.invalidClientStatus = http.StatusUnauthorized
		return
	}
	s.invalidClientStatus = http.StatusBadRequest
}

// SetClientSecret registers the client id with secret, or changes the secret
// of a registered client. Tokens already issued stay valid.
func (s *Server) SetClientSecret(id, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[id] = secret
}

// RemoveClient unregisters the client id. Tokens already issued stay valid.
func (s *Server) RemoveClient(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.clients, id)
}

// RevokeAll invalidates every issued token.
func (s *Server) RevokeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// RevokeToken invalidates one token and reports whether it was live or
// expired but not yet deleted.
func (s *Server) RevokeToken(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, found := s.tokens[token]
	delete(s.tokens, token)
	return found
}

// RejectAllTokens makes the resource API respond with 401 to every token while
// reject is true. Tokens are not revoked, so they work again after
// RejectAllTokens(false) unless they expired meanwhile.
func (s *Server) RejectAllTokens(reject bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejectAllTokens = reject
}

// TokenRequests returns the number of requests that reached the token
// endpoint, including injected failures and rejected ones.
func (s *Server) TokenRequests() int64 {
	return s.tokenRequests.Load()
}

// APIRequests returns the number of requests that reached the resource API,
// including those rejected with 401.
func (s *Server) APIRequests() int64 {
	return s.apiRequests.Load()
}

// TokensIssued returns the number of access tokens the server has issued.
func (s *Server) TokensIssued() int64 {
	return s.tokensIssued.Load()
}

// ActiveTokens returns the number of issued tokens that are neither expired
// nor revoked.
func (s *Server) ActiveTokens() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	active := 0
	for _, info := range s.tokens {
		if now.Before(info.expiresAt) {
			active++
		}
	}
	return active
}
