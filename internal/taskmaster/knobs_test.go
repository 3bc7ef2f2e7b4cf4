package taskmaster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestFailTokenRequests(t *testing.T) {
	server, ts := startServer(t, Config{})
	server.FailTokenRequests(2, http.StatusServiceUnavailable, "upstream down", "text/plain")

	for i := range 2 {
		req := newRequest(t, ts, http.MethodPost, tokenPath,
			"application/x-www-form-urlencoded", formBody("grant_type", "client_credentials"))
		req.Header.Set("Authorization", basicAuth(testClientID, testClientSecret))
		resp := do(t, ts, req)
		if resp.status != http.StatusServiceUnavailable {
			t.Errorf("request %d status got %d; want 503", i, resp.status)
		}
		if got := string(resp.body); got != "upstream down" {
			t.Errorf("request %d body got %q; want %q", i, got, "upstream down")
		}
		if got := resp.header.Get("Content-Type"); got != "text/plain" {
			t.Errorf("request %d Content-Type got %q; want text/plain", i, got)
		}
	}
	fetchToken(t, ts)

	if got := server.TokenRequests(); got != 3 {
		t.Errorf("TokenRequests got %d; want 3", got)
	}
	if got := server.TokensIssued(); got != 1 {
		t.Errorf("TokensIssued got %d; want 1", got)
	}
}

func TestFailTokenRequestsCancel(t *testing.T) {
	server, ts := startServer(t, Config{})
	server.FailTokenRequests(5, http.StatusInternalServerError, "", "")
	server.FailTokenRequests(0, 0, "", "")
	fetchToken(t, ts)
}

func TestFailTokenRequestsApplyToInvalidRequests(t *testing.T) {
	server, ts := startServer(t, Config{})
	server.FailTokenRequests(1, http.StatusBadGateway, "<html>bad gateway</html>", "text/html")
	// No Content-Type and no credentials: the injected response is still sent.
	resp := do(t, ts, newRequest(t, ts, http.MethodPost, tokenPath, "", ""))
	if resp.status != http.StatusBadGateway {
		t.Errorf("status got %d; want 502", resp.status)
	}
}

func TestRateLimitTokenRequests(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		retryAfter string
	}{
		{"429 with seconds", http.StatusTooManyRequests, "2"},
		{"503 with http date", http.StatusServiceUnavailable, "Wed, 21 Oct 2015 07:28:00 GMT"},
		{"429 without retry-after", http.StatusTooManyRequests, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, ts := startServer(t, Config{})
			server.RateLimitTokenRequests(1, tt.status, tt.retryAfter)

			req := newRequest(t, ts, http.MethodPost, tokenPath,
				"application/x-www-form-urlencoded", formBody("grant_type", "client_credentials"))
			req.Header.Set("Authorization", basicAuth(testClientID, testClientSecret))
			resp := do(t, ts, req)
			if resp.status != tt.status {
				t.Errorf("status got %d; want %d", resp.status, tt.status)
			}
			got, present := resp.header["Retry-After"]
			if tt.retryAfter == "" && present {
				t.Errorf("Retry-After got %q; want no header", got)
			}
			if tt.retryAfter != "" && resp.header.Get("Retry-After") != tt.retryAfter {
				t.Errorf("Retry-After got %q; want %q", resp.header.Get("Retry-After"), tt.retryAfter)
			}

			fetchToken(t, ts)
		})
	}
}

func TestRateLimitBeforeFailure(t *testing.T) {
	server, ts := startServer(t, Config{})
	server.FailTokenRequests(1, http.StatusInternalServerError, "boom", "text/plain")
	server.RateLimitTokenRequests(1, http.StatusTooManyRequests, "1")

	var statuses []int
	for range 3 {
		req := newRequest(t, ts, http.MethodPost, tokenPath,
			"application/x-www-form-urlencoded", formBody("grant_type", "client_credentials"))
		req.Header.Set("Authorization", basicAuth(testClientID, testClientSecret))
		statuses = append(statuses, do(t, ts, req).status)
	}
	want := []int{http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusOK}
	if !slices.Equal(statuses, want) {
		t.Errorf("statuses got %v; want %v", statuses, want)
	}
}

func TestSetLatency(t *testing.T) {
	const latency = 150 * time.Millisecond
	server, ts := startServer(t, Config{})
	server.SetLatency(latency)

	start := time.Now()
	token := fetchToken(t, ts).AccessToken
	if elapsed := time.Since(start); elapsed < latency {
		t.Errorf("token request took %v; want at least %v", elapsed, latency)
	}

	start = time.Now()
	apiRequest(t, ts, http.MethodGet, "/api/tasks", token, "")
	if elapsed := time.Since(start); elapsed >= latency {
		t.Errorf("API request took %v; want less than the token latency %v", elapsed, latency)
	}
}

func TestSetAPILatency(t *testing.T) {
	const latency = 150 * time.Millisecond
	server, ts := startServer(t, Config{})
	token := fetchToken(t, ts).AccessToken
	server.SetAPILatency(latency)

	start := time.Now()
	resp := apiRequest(t, ts, http.MethodGet, "/api/tasks", token, "")
	if elapsed := time.Since(start); elapsed < latency {
		t.Errorf("API request took %v; want at least %v", elapsed, latency)
	}
	if resp.status != http.StatusOK {
		t.Errorf("status got %d; want 200", resp.status)
	}
}

func TestLatencyEndsWithClientCancel(t *testing.T) {
	server, ts := startServer(t, Config{})
	server.SetLatency(time.Minute)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req := newRequest(t, ts, http.MethodPost, tokenPath,
		"application/x-www-form-urlencoded", formBody("grant_type", "client_credentials"))
	req = req.WithContext(ctx)
	start := time.Now()
	resp, err := ts.Client().Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("request error got nil; want a deadline error")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("request error got %v; want context.DeadlineExceeded", err)
	}
	// ts.Close in the cleanup waits for the handler, and goleak in TestMain
	// fails the package if the handler stayed asleep.
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("request took %v; want about 50ms", elapsed)
	}
}

func TestSetClientSecret(t *testing.T) {
	server, ts := startServer(t, Config{})
	server.SetClientSecret(testClientID, "rotated")

	tests := []struct {
		name       string
		id, secret string
		wantStatus int
	}{
		{"old secret", testClientID, testClientSecret, http.StatusBadRequest},
		{"new secret", testClientID, "rotated", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := newRequest(t, ts, http.MethodPost, tokenPath,
				"application/x-www-form-urlencoded", formBody("grant_type", "client_credentials"))
			req.Header.Set("Authorization", basicAuth(tt.id, tt.secret))
			if got := do(t, ts, req).status; got != tt.wantStatus {
				t.Errorf("status got %d; want %d", got, tt.wantStatus)
			}
		})
	}

	server.SetClientSecret("second-client", "another")
	req := newRequest(t, ts, http.MethodPost, tokenPath,
		"application/x-www-form-urlencoded", formBody("grant_type", "client_credentials"))
	req.Header.Set("Authorization", basicAuth("second-client", "another"))
	if got := do(t, ts, req).status; got != http.StatusOK {
		t.Errorf("new client status got %d; want 200", got)
	}

	server.RemoveClient("second-client")
	req = newRequest(t, ts, http.MethodPost, tokenPath,
		"application/x-www-form-urlencoded", formBody("grant_type", "client_credentials"))
	req.Header.Set("Authorization", basicAuth("second-client", "another"))
	if got := do(t, ts, req).status; got != http.StatusBadRequest {
		t.Errorf("removed client status got %d; want 400", got)
	}
}

func TestNewCopiesClients(t *testing.T) {
	clients := map[string]string{testClientID: testClientSecret}
	_, ts := startServer(t, Config{Clients: clients})
	clients[testClientID] = "changed"
	fetchToken(t, ts)
}

func TestCounters(t *testing.T) {
	server, ts := startServer(t, Config{})
	token := fetchToken(t, ts).AccessToken
	for range 3 {
		apiRequest(t, ts, http.MethodGet, "/api/tasks", token, "")
	}
	apiRequest(t, ts, http.MethodGet, "/api/tasks", "", "")

	if got := server.TokenRequests(); got != 1 {
		t.Errorf("TokenRequests got %d; want 1", got)
	}
	if got := server.APIRequests(); got != 4 {
		t.Errorf("APIRequests got %d; want 4", got)
	}
	stats := server.Stats()
	want := Stats{TokenRequests: 1, APIRequests: 4, TokensIssued: 1, ActiveTokens: 1}
	if stats != want {
		t.Errorf("Stats got %+v; want %+v", stats, want)
	}
}

func TestTokenRequestRecords(t *testing.T) {
	server, ts := startServer(t, Config{})

	basic := newRequest(t, ts, http.MethodPost, tokenPath,
		"application/x-www-form-urlencoded", formBody("grant_type", "client_credentials", "scope", "tasks"))
	basic.Header.Set("Authorization", basicAuth(testClientID, testClientSecret))
	do(t, ts, basic)

	body := newRequest(t, ts, http.MethodPost, tokenPath, "application/json",
		fmt.Sprintf(`{"grant_type":"client_credentials","client_id":%q,"client_secret":%q}`, testClientID, testClientSecret))
	do(t, ts, body)

	none := newRequest(t, ts, http.MethodPost, tokenPath,
		"application/x-www-form-urlencoded", formBody("grant_type", "client_credentials"))
	do(t, ts, none)

	records := server.RecentTokenRequests()
	if len(records) != 3 {
		t.Fatalf("number of records got %d; want 3", len(records))
	}
	tests := []struct {
		name        string
		record      TokenRequest
		wantMethod  string
		wantClient  string
		wantStatus  int
		wantForm    map[string]string
		wantContent string
	}{
		{"basic", records[0], AuthMethodBasic, testClientID, http.StatusOK,
			map[string]string{"grant_type": "client_credentials", "scope": "tasks"}, "application/x-www-form-urlencoded"},
		{"body", records[1], AuthMethodBody, testClientID, http.StatusOK,
			map[string]string{"grant_type": "client_credentials", "client_id": testClientID}, "application/json"},
		{"none", records[2], "", "", http.StatusUnauthorized,
			map[string]string{"grant_type": "client_credentials"}, "application/x-www-form-urlencoded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.record.AuthMethod != tt.wantMethod {
				t.Errorf("AuthMethod got %q; want %q", tt.record.AuthMethod, tt.wantMethod)
			}
			if tt.record.ClientID != tt.wantClient {
				t.Errorf("ClientID got %q; want %q", tt.record.ClientID, tt.wantClient)
			}
			if tt.record.Status != tt.wantStatus {
				t.Errorf("Status got %d; want %d", tt.record.Status, tt.wantStatus)
			}
			if fmt.Sprint(tt.record.Form) != fmt.Sprint(tt.wantForm) {
				t.Errorf("Form got %v; want %v", tt.record.Form, tt.wantForm)
			}
			if _, ok := tt.record.Form["client_secret"]; ok {
				t.Errorf("Form contains client_secret; want it left out")
			}
			if tt.record.ContentType != tt.wantContent {
				t.Errorf("ContentType got %q; want %q", tt.record.ContentType, tt.wantContent)
			}
			if tt.record.Method != http.MethodPost {
				t.Errorf("Method got %q; want POST", tt.record.Method)
			}
		})
	}

	// The returned records are copies.
	records[0].Form["grant_type"] = "changed"
	if got := server.RecentTokenRequests()[0].Form["grant_type"]; got != "client_credentials" {
		t.Errorf("stored grant_type got %q after changing a returned copy; want client_credentials", got)
	}
}

func TestAPIRequestRecords(t *testing.T) {
	server, ts := startServer(t, Config{})
	token := fetchToken(t, ts).AccessToken

	req := newRequest(t, ts, http.MethodGet, "/api/tasks/a%2Fb?x=1", "", "")
	req.Host = "taskmaster.example"
	req.Header["Authorization"] = []string{"Bearer " + token, "Bearer other"}
	do(t, ts, req)

	records := server.RecentAPIRequests()
	if len(records) != 1 {
		t.Fatalf("number of records got %d; want 1", len(records))
	}
	record := records[0]
	if record.Host != "taskmaster.example" {
		t.Errorf("Host got %q; want taskmaster.example", record.Host)
	}
	if record.Path != "/api/tasks/a/b" {
		t.Errorf("Path got %q; want /api/tasks/a/b", record.Path)
	}
	if record.RawPath != "/api/tasks/a%2Fb" {
		t.Errorf("RawPath got %q; want /api/tasks/a%%2Fb", record.RawPath)
	}
	if record.RequestURI != "/api/tasks/a%2Fb?x=1" {
		t.Errorf("RequestURI got %q; want /api/tasks/a%%2Fb?x=1", record.RequestURI)
	}
	wantAuthorization := []string{"Bearer " + token, "Bearer other"}
	if !slices.Equal(record.Authorization, wantAuthorization) {
		t.Errorf("Authorization got %q; want %q", record.Authorization, wantAuthorization)
	}
	if record.Status != http.StatusUnauthorized {
		t.Errorf("Status got %d; want 401 for two Authorization lines", record.Status)
	}
	if record.Method != http.MethodGet {
		t.Errorf("Method got %q; want GET", record.Method)
	}

	server.ResetRecords()
	if got := len(server.RecentAPIRequests()); got != 0 {
		t.Errorf("number of records after ResetRecords got %d; want 0", got)
	}
	if got := server.APIRequests(); got != 1 {
		t.Errorf("APIRequests after ResetRecords got %d; want 1", got)
	}
}

func TestRecordLimit(t *testing.T) {
	server, ts := startServer(t, Config{RecordLimit: 3})
	for range 5 {
		fetchToken(t, ts)
	}
	token := fetchToken(t, ts).AccessToken
	for i := range 5 {
		apiRequest(t, ts, http.MethodGet, fmt.Sprintf("/api/tasks?n=%d", i), token, "")
	}

	if got := len(server.RecentTokenRequests()); got != 3 {
		t.Errorf("number of token records got %d; want 3", got)
	}
	records := server.RecentAPIRequests()
	var uris []string
	for _, record := range records {
		uris = append(uris, record.RequestURI)
	}
	want := []string{"/api/tasks?n=2", "/api/tasks?n=3", "/api/tasks?n=4"}
	if !slices.Equal(uris, want) {
		t.Errorf("recorded URIs got %v; want %v", uris, want)
	}
}

func TestConcurrentUse(t *testing.T) {
	server, ts := startServer(t, Config{})
	const workers = 8
	const rounds = 10

	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := ts.Client()
			for r := range rounds {
				req, _ := http.NewRequest(http.MethodPost, ts.URL+tokenPath, nil)
				req.Header.Set("Authorization", basicAuth(testClientID, testClientSecret))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.Body = http.NoBody
				resp, err := client.Do(req)
				if err != nil {
					errs <- fmt.Errorf("worker %d round %d: %w", w, r, err)
					return
				}
				resp.Body.Close()
				switch r % 4 {
				case 0:
					server.SetLatency(0)
				case 1:
					server.RevokeAll()
				case 2:
					server.SetTokenLifetime(time.Hour)
				case 3:
					_ = server.RecentTokenRequests()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := server.TokenRequests(); got != workers*rounds {
		t.Errorf("TokenRequests got %d; want %d", got, workers*rounds)
	}
}

func TestAPILatencyEndsWithClientCancel(t *testing.T) {
	server, ts := startServer(t, Config{})
	token := fetchToken(t, ts).AccessToken
	server.SetAPILatency(time.Minute)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	body := fmt.Sprintf(`{"title":"t","description":"d","project_id":%q}`, SeedProjectID)
	req := newRequest(t, ts, http.MethodPost, "/api/tasks", "application/json", body)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := ts.Client().Do(req.WithContext(ctx))
	if err == nil {
		resp.Body.Close()
		t.Fatalf("request error got nil; want a deadline error")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("request error got %v; want context.DeadlineExceeded", err)
	}
}
