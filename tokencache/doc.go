// Package tokencache keeps one OAuth2 access token obtained with the
// client-credentials grant (RFC 6749 section 4.4) and replaces it in the
// background well before it expires.
//
// Reading a valid token takes no lock and allocates nothing: [Cache.Token]
// loads an atomic pointer that a timer clears when the token stops being
// usable. Every fetch goes through one singleflight key, so any number of
// concurrent callers cause one token request, and a caller that gives up does
// not cancel the shared fetch, which runs on the cache's own context with its
// own timeout. Failed fetches back off exponentially with jitter and honour
// Retry-After, and a failed refresh never drops a token that is still valid.
package tokencache
