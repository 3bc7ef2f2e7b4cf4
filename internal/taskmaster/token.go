package taskmaster

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// OAuth 2.0 error codes from RFC 6749 section 5.2.
const (
	errInvalidRequest       = "invalid_request"
	errInvalidClient        = "invalid_client"
	errUnsupportedGrantType = "unsupported_grant_type"
)

// Client authentication methods recorded in TokenRequest.AuthMethod.
const (
	AuthMethodBasic = "basic"
	AuthMethodBody  = "body"
)

const (
	// tokenLength and tokenAlphabet match the hosted service, whose
	// client-credentials handler issues 32 random characters from a-z and
	// A-Z (github.com/speakeasy-api/taskmaster,
	// src/lib/oidc-provider/handlers/token/client-credentials.ts).
	tokenLength   = 32
	tokenAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

	// maxTokenBodyBytes bounds the token request body that the server reads.
	maxTokenBodyBytes = 64 << 10

	// sweepInterval is the number of issued tokens after which the server
	// deletes the expired ones, so a long soak run does not grow the map
	// without bound.
	sweepInterval = 1024

	contentTypeMessage = "Content-Type must be set to application/x-www-form-urlencoded or application/json"
)

// tokenInfo is the server-side state of one issued access token.
type tokenInfo struct {
	clientID  string
	expiresAt time.Time
}

// tokenResponse is the success body of the token endpoint.
type tokenResponse struct {
	AccessToken string  `json:"access_token"`
	TokenType   string  `json:"token_type"`
	ExpiresIn   int64   `json:"expires_in"`
	IDToken     *string `json:"id_token"`
}

// oauthError is the error body of the token endpoint (RFC 6749 section 5.2).
type oauthError struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// tokenParams contains the parsed body of a token request.
type tokenParams struct {
	// values contains every parameter. A JSON value that is not a string is
	// stored as its JSON text and its name is added to nonString.
	values    map[string]string
	nonString map[string]bool
}

// clientCredentials contains the client authentication found in a token
// request.
type clientCredentials struct {
	method string // AuthMethodBasic, AuthMethodBody or empty
	id     string
	secret string
}

// handleToken serves POST /api/auth/oauth2/token.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	s.tokenRequests.Add(1)
	sw := &statusRecorder{ResponseWriter: w}
	w = sw

	// Reading the body before the delay lets the server notice a client that
	// disconnects during the delay, which cancels the request context.
	body, readErr := readLimited(r.Body, maxTokenBodyBytes)
	s.mu.Lock()
	latency := s.tokenLatency
	s.mu.Unlock()
	sleepContext(r.Context(), latency)

	contentType := r.Header.Get("Content-Type")
	params, parseErr := parseTokenBody(contentType, body, readErr)
	creds, credsErr := extractClientCredentials(r.Header.Get("Authorization"), params)

	record := TokenRequest{
		Time:        s.now(),
		Method:      r.Method,
		ContentType: contentType,
		AuthMethod:  creds.method,
		ClientID:    creds.id,
		Form:        params.redacted(),
	}
	defer func() {
		record.Status = sw.status
		s.recorder.addToken(record)
	}()

	if s.writeInjectedTokenResponse(w) {
		return
	}

	if parseErr != nil {
		writeOAuthError(w, http.StatusBadRequest, errInvalidRequest, parseErr.Error())
		return
	}
	grantType, isString := params.get("grant_type")
	if !isString || grantType != "client_credentials" {
		writeOAuthError(w, http.StatusBadRequest, errUnsupportedGrantType,
			fmt.Sprintf("unsupported grant type %q, expected client_credentials", grantType))
		return
	}
	if credsErr != nil {
		writeOAuthError(w, http.StatusBadRequest, errInvalidRequest, credsErr.Error())
		return
	}
	if creds.id == "" || creds.secret == "" {
		w.Header().Set("WWW-Authenticate", `Basic realm="taskmaster"`)
		writeOAuthError(w, http.StatusUnauthorized, errInvalidClient, "Client authentication required")
		return
	}

	token, expiresIn, status := s.issueToken(creds)
	if token == "" {
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="taskmaster"`)
		}
		writeOAuthError(w, status, errInvalidClient, "invalid client credentials")
		return
	}

	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, tokenResponse{
		AccessToken: token,
		TokenType:   "Bearer",
		ExpiresIn:   expiresIn,
	})
}

// issueToken checks the client credentials and, when they match a registered
// client, stores and returns a new access token with its expires_in value.
// On a mismatch it returns an empty token and the configured status.
func (s *Server) issueToken(creds clientCredentials) (token string, expiresIn int64, status int) {
	token = newAccessToken()

	s.mu.Lock()
	defer s.mu.Unlock()

	secret, ok := s.clients[creds.id]
	if !ok || subtle.ConstantTimeCompare([]byte(secret), []byte(creds.secret)) != 1 {
		return "", 0, s.invalidClientStatus
	}

	now := s.now()
	s.tokens[token] = tokenInfo{clientID: creds.id, expiresAt: now.Add(s.tokenLifetime)}
	s.tokensIssued.Add(1)
	s.issuedSinceSweep++
	if s.issuedSinceSweep >= sweepInterval {
		s.sweepExpiredLocked(now)
	}
	return token, expiresInSeconds(s.tokenLifetime), http.StatusOK
}

// expiresInSeconds converts a token lifetime to the whole seconds of the
// expires_in field. A positive lifetime under one second becomes 1, so a
// client never sees 0 for a token that is still valid when it is issued.
func expiresInSeconds(lifetime time.Duration) int64 {
	seconds := int64(lifetime / time.Second)
	if seconds == 0 && lifetime > 0 {
		return 1
	}
	return seconds
}

// sweepExpiredLocked deletes expired tokens. The caller must hold s.mu.
func (s *Server) sweepExpiredLocked(now time.Time) {
	for token, info := range s.tokens {
		if !now.Before(info.expiresAt) {
			delete(s.tokens, token)
		}
	}
	s.issuedSinceSweep = 0
}

// validateToken reports whether token is a live access token and returns the
// client it was issued to. An expired token is deleted.
func (s *Server) validateToken(token string) (clientID string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.rejectAllTokens {
		return "", false
	}
	info, found := s.tokens[token]
	if !found {
		return "", false
	}
	if !s.now().Before(info.expiresAt) {
		delete(s.tokens, token)
		return "", false
	}
	return info.clientID, true
}

// newAccessToken returns tokenLength random letters from crypto/rand.
func newAccessToken() string {
	// Rejection sampling keeps the distribution uniform: 52*4 = 208 is the
	// largest multiple of 52 that fits in a byte.
	const limit = 256 - 256%len(tokenAlphabet)
	token := make([]byte, 0, tokenLength)
	buf := make([]byte, 2*tokenLength)
	for len(token) < tokenLength {
		// crypto/rand.Read never returns an error since Go 1.24.
		_, _ = rand.Read(buf)
		for _, b := range buf {
			if int(b) >= limit {
				continue
			}
			token = append(token, tokenAlphabet[int(b)%len(tokenAlphabet)])
			if len(token) == tokenLength {
				break
			}
		}
	}
	return string(token)
}

// parseTokenBody parses the request body as a form or as a JSON object,
// depending on contentType. readErr is the error of reading the body. The
// returned params are usable even when the error is not nil, so the request
// can still be recorded.
func parseTokenBody(contentType string, body []byte, readErr error) (tokenParams, error) {
	params := tokenParams{values: map[string]string{}, nonString: map[string]bool{}}
	if contentType == "" {
		return params, fmt.Errorf("missing Content-Type: %s", contentTypeMessage)
	}
	mediaType, _, err := mime.ParseMediaType(contentType)
	if err != nil || (mediaType != "application/x-www-form-urlencoded" && mediaType != "application/json") {
		return params, fmt.Errorf("unsupported Content-Type %q: %s", contentType, contentTypeMessage)
	}

	if readErr != nil {
		return params, readErr
	}

	if mediaType == "application/x-www-form-urlencoded" {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return params, fmt.Errorf("invalid form body: %v", err)
		}
		for name, values := range form {
			// The hosted service keeps the last value of a repeated
			// parameter, so this server does the same.
			params.values[name] = values[len(values)-1]
		}
		return params, nil
	}

	var object map[string]json.RawMessage
	if err := json.Unmarshal(body, &object); err != nil {
		return params, fmt.Errorf("invalid JSON body, expected an object: %v", err)
	}
	for name, raw := range object {
		var text string
		if err := json.Unmarshal(raw, &text); err == nil {
			params.values[name] = text
			continue
		}
		if string(raw) == "null" {
			continue
		}
		params.values[name] = string(raw)
		params.nonString[name] = true
	}
	return params, nil
}

// get returns the named parameter and whether it is present as a string.
func (p tokenParams) get(name string) (string, bool) {
	value, ok := p.values[name]
	return value, ok && !p.nonString[name]
}

// redacted returns a copy of the parameters without client_secret.
func (p tokenParams) redacted() map[string]string {
	form := make(map[string]string, len(p.values))
	for name, value := range p.values {
		if name == "client_secret" {
			continue
		}
		form[name] = value
	}
	return form
}

// extractClientCredentials finds the client authentication of a token
// request. Like the hosted service, it uses a Basic Authorization header only
// when the decoded text splits on ":" into exactly two parts, and it does not
// URL-decode them. Otherwise it falls back to the client_id and client_secret
// body parameters.
//
// NOTE: the hosted service decodes the header with JavaScript's atob, which
// maps each byte to one UTF-16 code unit, so a non-ASCII id or secret likely
// fails there but matches here, where bytes are compared.
func extractClientCredentials(authorization string, params tokenParams) (clientCredentials, error) {
	if rest, ok := strings.CutPrefix(authorization, "Basic "); ok {
		// The hosted service takes the second space-separated field.
		encoded, _, _ := strings.Cut(rest, " ")
		decoded, err := decodeBase64(encoded)
		if err != nil {
			return clientCredentials{}, errors.New("invalid client credentials format in Authorization header")
		}
		parts := strings.Split(string(decoded), ":")
		if len(parts) == 2 {
			return clientCredentials{method: AuthMethodBasic, id: parts[0], secret: parts[1]}, nil
		}
	}

	if params.nonString["client_id"] || params.nonString["client_secret"] {
		return clientCredentials{}, errors.New("invalid client credentials format in request body")
	}
	id := params.values["client_id"]
	secret := params.values["client_secret"]
	if id == "" && secret == "" {
		return clientCredentials{}, nil
	}
	return clientCredentials{method: AuthMethodBody, id: id, secret: secret}, nil
}

// decodeBase64 decodes standard base64 with or without padding, as atob does.
func decodeBase64(encoded string) ([]byte, error) {
	decoded, err := base64.StdEncoding.DecodeString(encoded)
	if err == nil {
		return decoded, nil
	}
	return base64.RawStdEncoding.DecodeString(encoded)
}

// writeOAuthError sends an RFC 6749 section 5.2 error response.
func writeOAuthError(w http.ResponseWriter, status int, code, description string) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, oauthError{Error: code, ErrorDescription: description})
}
