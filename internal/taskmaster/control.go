package taskmaster

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Control endpoints, served only when Config.EnableControl is set. Each POST
// takes a JSON object and responds with 204, and each GET responds with JSON:
//
//	GET  /_control/stats                      Stats
//	GET  /_control/token-requests             []TokenRequest
//	GET  /_control/api-requests               []APIRequest
//	POST /_control/token-lifetime             {"lifetime": "90s"}
//	POST /_control/latency                    {"token": "200ms", "api": "0s"}
//	POST /_control/fail-token-requests        {"count": 3, "status": 500, "body": "...", "content_type": "text/plain"}
//	POST /_control/rate-limit-token-requests  {"count": 2, "status": 429, "retry_after": "1"}
//	POST /_control/revoke                     {"token": "..."}
//	POST /_control/revoke-all                 {}
//	POST /_control/reject-all-tokens          {"reject": true}
//	POST /_control/client-secret              {"client_id": "...", "client_secret": "..."}
//	POST /_control/reset-records              {}
//
// Durations use Go syntax (time.ParseDuration).

// Stats contains the counters of a Server.
type Stats struct {
	TokenRequests int64 `json:"token_requests"`
	APIRequests   int64 `json:"api_requests"`
	TokensIssued  int64 `json:"tokens_issued"`
	ActiveTokens  int   `json:"active_tokens"`
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	return Stats{
		TokenRequests: s.TokenRequests(),
		APIRequests:   s.APIRequests(),
		TokensIssued:  s.TokensIssued(),
		ActiveTokens:  s.ActiveTokens(),
	}
}

// maxControlBodyBytes bounds the request body of a control endpoint.
const maxControlBodyBytes = 1 << 20

func (s *Server) routeControl() {
	s.mux.HandleFunc("GET /_control/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Stats())
	})
	s.mux.HandleFunc("GET /_control/token-requests", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.RecentTokenRequests())
	})
	s.mux.HandleFunc("GET /_control/api-requests", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.RecentAPIRequests())
	})

	s.mux.HandleFunc("POST /_control/token-lifetime", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Lifetime string `json:"lifetime"`
		}
		if !readControlRequest(w, r, &req) {
			return
		}
		lifetime, ok := parseControlDuration(w, "lifetime", req.Lifetime)
		if !ok {
			return
		}
		s.SetTokenLifetime(lifetime)
		w.WriteHeader(http.StatusNoContent)
	})

	s.mux.HandleFunc("POST /_control/latency", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Token *string `json:"token"`
			API   *string `json:"api"`
		}
		if !readControlRequest(w, r, &req) {
			return
		}
		var tokenLatency, apiLatency time.Duration
		ok := true
		if req.Token != nil {
			tokenLatency, ok = parseControlDuration(w, "token", *req.Token)
		}
		if ok && req.API != nil {
			apiLatency, ok = parseControlDuration(w, "api", *req.API)
		}
		if !ok {
			return
		}
		if req.Token != nil {
			s.SetLatency(tokenLatency)
		}
		if req.API != nil {
			s.SetAPILatency(apiLatency)
		}
		w.WriteHeader(http.StatusNoContent)
	})

	s.mux.HandleFunc("POST /_control/fail-token-requests", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Count       int    `json:"count"`
			Status      int    `json:"status"`
			Body        string `json:"body"`
			ContentType string `json:"content_type"`
		}
		if !readControlRequest(w, r, &req) {
			return
		}
		if req.Count > 0 && !validStatus(w, req.Status) {
			return
		}
		s.FailTokenRequests(req.Count, req.Status, req.Body, req.ContentType)
		w.WriteHeader(http.StatusNoContent)
	})

	s.mux.HandleFunc("POST /_control/rate-limit-token-requests", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Count      int    `json:"count"`
			Status     int    `json:"status"`
			RetryAfter string `json:"retry_after"`
		}
		if !readControlRequest(w, r, &req) {
			return
		}
		if req.Status == 0 {
			req.Status = http.StatusTooManyRequests
		}
		if req.Count > 0 && !validStatus(w, req.Status) {
			return
		}
		s.RateLimitTokenRequests(req.Count, req.Status, req.RetryAfter)
		w.WriteHeader(http.StatusNoContent)
	})

	s.mux.HandleFunc("POST /_control/revoke", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Token string `json:"token"`
		}
		if !readControlRequest(w, r, &req) {
			return
		}
		if !s.RevokeToken(req.Token) {
			writeJSON(w, http.StatusNotFound, messageResponse{Message: "token not found"})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})

	s.mux.HandleFunc("POST /_control/revoke-all", func(w http.ResponseWriter, r *http.Request) {
		s.RevokeAll()
		w.WriteHeader(http.StatusNoContent)
	})

	s.mux.HandleFunc("POST /_control/reject-all-tokens", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Reject bool `json:"reject"`
		}
		if !readControlRequest(w, r, &req) {
			return
		}
		s.RejectAllTokens(req.Reject)
		w.WriteHeader(http.StatusNoContent)
	})

	s.mux.HandleFunc("POST /_control/client-secret", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ClientID     string `json:"client_id"`
			ClientSecret string `json:"client_secret"`
		}
		if !readControlRequest(w, r, &req) {
			return
		}
		if req.ClientID == "" || req.ClientSecret == "" {
			writeJSON(w, http.StatusBadRequest, messageResponse{Message: "client_id and client_secret are required"})
			return
		}
		s.SetClientSecret(req.ClientID, req.ClientSecret)
		w.WriteHeader(http.StatusNoContent)
	})

	s.mux.HandleFunc("POST /_control/reset-records", func(w http.ResponseWriter, r *http.Request) {
		s.ResetRecords()
		w.WriteHeader(http.StatusNoContent)
	})
}

// readControlRequest decodes the JSON body into v, or sends 400 and returns
// false. Unknown fields are rejected so that a misspelt knob is noticed.
func readControlRequest(w http.ResponseWriter, r *http.Request, v any) bool {
	decoder := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxControlBodyBytes))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, messageResponse{Message: fmt.Sprintf("invalid control request body: %v", err)})
		return false
	}
	return true
}

// parseControlDuration parses a non-negative Go duration, or sends 400 and
// returns false.
func parseControlDuration(w http.ResponseWriter, name, value string) (time.Duration, bool) {
	d, err := time.ParseDuration(value)
	if err != nil || d < 0 {
		writeJSON(w, http.StatusBadRequest, messageResponse{
			Message: fmt.Sprintf("%s %q is not a non-negative duration such as \"1.5s\"", name, value),
		})
		return 0, false
	}
	return d, true
}

// validStatus reports whether status is a final HTTP status code, and sends
// 400 when it is not.
func validStatus(w http.ResponseWriter, status int) bool {
	if status < 200 || status > 599 {
		writeJSON(w, http.StatusBadRequest, messageResponse{Message: fmt.Sprintf("status %d must be an HTTP status code from 200 to 599", status)})
		return false
	}
	return true
}
