package taskmaster

import (
	"maps"
	"slices"
	"sync"
	"time"
)

// TokenRequest is the record of one request to the token endpoint.
type TokenRequest struct {
	Time        time.Time `json:"time"`
	Method      string    `json:"method"`
	ContentType string    `json:"content_type"`

	// AuthMethod is AuthMethodBasic, AuthMethodBody or empty when the
	// request carried no usable client credentials.
	AuthMethod string `json:"auth_method"`
	ClientID   string `json:"client_id"`

	// Form contains the body parameters except client_secret.
	Form map[string]string `json:"form"`

	// Status is the HTTP status the server sent.
	Status int `json:"status"`
}

// APIRequest is the record of one request to the resource API.
type APIRequest struct {
	Time   time.Time `json:"time"`
	Method string    `json:"method"`
	Host   string    `json:"host"`

	// Path is the decoded URL path, and RawPath its encoded form when it
	// differs from the default encoding of Path (see url.URL.RawPath).
	// RequestURI is the request target exactly as sent.
	Path       string `json:"path"`
	RawPath    string `json:"raw_path"`
	RequestURI string `json:"request_uri"`

	// Authorization contains each Authorization header line in order.
	Authorization []string `json:"authorization"`

	Status int `json:"status"`
}

// recorder keeps the most recent token and API request records.
type recorder struct {
	limit int

	// guards tokenRequests and apiRequests
	mu            sync.Mutex
	tokenRequests []TokenRequest
	apiRequests   []APIRequest
}

func newRecorder(limit int) *recorder {
	return &recorder{limit: limit}
}

func (rec *recorder) addToken(r TokenRequest) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.tokenRequests = appendBounded(rec.tokenRequests, r, rec.limit)
}

func (rec *recorder) addAPI(r APIRequest) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.apiRequests = appendBounded(rec.apiRequests, r, rec.limit)
}

// appendBounded appends v and drops the oldest elements beyond limit.
func appendBounded[T any](records []T, v T, limit int) []T {
	records = append(records, v)
	if len(records) > limit {
		records = slices.Delete(records, 0, len(records)-limit)
	}
	return records
}

// RecentTokenRequests returns copies of the most recent token request records,
// oldest first. The number kept is Config.RecordLimit.
func (s *Server) RecentTokenRequests() []TokenRequest {
	s.recorder.mu.Lock()
	defer s.recorder.mu.Unlock()
	records := slices.Clone(s.recorder.tokenRequests)
	for i := range records {
		records[i].Form = maps.Clone(records[i].Form)
	}
	return records
}

// RecentAPIRequests returns copies of the most recent API request records,
// oldest first. The number kept is Config.RecordLimit.
func (s *Server) RecentAPIRequests() []APIRequest {
	s.recorder.mu.Lock()
	defer s.recorder.mu.Unlock()
	records := slices.Clone(s.recorder.apiRequests)
	for i := range records {
		records[i].Authorization = slices.Clone(records[i].Authorization)
	}
	return records
}

// ResetRecords deletes the request records. The counters keep their values.
func (s *Server) ResetRecords() {
	s.recorder.mu.Lock()
	defer s.recorder.mu.Unlock()
	s.recorder.tokenRequests = nil
	s.recorder.apiRequests = nil
}
