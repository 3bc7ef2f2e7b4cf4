package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// envOf returns a getenv function backed by vars.
func envOf(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

func TestParseOptions(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		wantErr    string // substring; empty means success
		wantSecret string
		check      func(t *testing.T, opts options)
	}{
		{
			name:       "defaults",
			args:       []string{"-client-id", "app", "-client-secret", "s"},
			wantSecret: "s",
			check: func(t *testing.T, opts options) {
				if opts.addr != "127.0.0.1:8081" {
					t.Errorf("addr got %q; want 127.0.0.1:8081", opts.addr)
				}
				if opts.tokenLifetime != time.Hour {
					t.Errorf("token lifetime got %v; want 1h", opts.tokenLifetime)
				}
				if opts.invalidClientStatus != http.StatusBadRequest {
					t.Errorf("invalid client status got %d; want 400", opts.invalidClientStatus)
				}
				if opts.control {
					t.Errorf("control got true; want false")
				}
			},
		},
		{
			name:       "secret file trims line break",
			args:       []string{"-client-id", "app", "-client-secret-file", secretFile},
			wantSecret: "from-file",
		},
		{
			name:       "secret from environment",
			args:       []string{"-client-id", "app"},
			env:        map[string]string{secretEnvVar: "from-env"},
			wantSecret: "from-env",
		},
		{
			name:       "flag wins over environment",
			args:       []string{"-client-id", "app", "-client-secret", "from-flag"},
			env:        map[string]string{secretEnvVar: "from-env"},
			wantSecret: "from-flag",
		},
		{
			name:       "all settings",
			args:       []string{"-client-id", "app", "-client-secret", "s", "-addr", "[::1]:0", "-token-lifetime", "30s", "-invalid-client-status", "401", "-control"},
			wantSecret: "s",
			check: func(t *testing.T, opts options) {
				if opts.addr != "[::1]:0" {
					t.Errorf("addr got %q; want [::1]:0", opts.addr)
				}
				if opts.tokenLifetime != 30*time.Second {
					t.Errorf("token lifetime got %v; want 30s", opts.tokenLifetime)
				}
				if opts.invalidClientStatus != http.StatusUnauthorized {
					t.Errorf("invalid client status got %d; want 401", opts.invalidClientStatus)
				}
				if !opts.control {
					t.Errorf("control got false; want true")
				}
			},
		},
		{
			name:       "localhost accepted",
			args:       []string{"-client-id", "app", "-client-secret", "s", "-addr", "localhost:9000"},
			wantSecret: "s",
		},
		{
			name:       "non-loopback allowed by flag",
			args:       []string{"-client-id", "app", "-client-secret", "s", "-addr", "0.0.0.0:8081", "-allow-non-loopback"},
			wantSecret: "s",
		},
		{name: "client id missing", args: []string{"-client-secret", "s"}, wantErr: "missing client id"},
		{name: "secret missing", args: []string{"-client-id", "app"}, wantErr: "missing client secret"},
		{name: "both secret flags", args: []string{"-client-id", "app", "-client-secret", "s", "-client-secret-file", secretFile}, wantErr: "use one"},
		{name: "secret file missing", args: []string{"-client-id", "app", "-client-secret-file", filepath.Join(t.TempDir(), "none")}, wantErr: "reading -client-secret-file failed"},
		{name: "all interfaces rejected", args: []string{"-client-id", "app", "-client-secret", "s", "-addr", ":8081"}, wantErr: "not a loopback address"},
		{name: "public address rejected", args: []string{"-client-id", "app", "-client-secret", "s", "-addr", "0.0.0.0:8081"}, wantErr: "not a loopback address"},
		{name: "host name rejected", args: []string{"-client-id", "app", "-client-secret", "s", "-addr", "example.com:80"}, wantErr: "not a loopback address"},
		{name: "address without port", args: []string{"-client-id", "app", "-client-secret", "s", "-addr", "127.0.0.1"}, wantErr: "invalid -addr"},
		{name: "status 403 rejected", args: []string{"-client-id", "app", "-client-secret", "s", "-invalid-client-status", "403"}, wantErr: "must be 400 or 401"},
		{name: "zero lifetime rejected", args: []string{"-client-id", "app", "-client-secret", "s", "-token-lifetime", "0s"}, wantErr: "must be positive"},
		{name: "positional argument rejected", args: []string{"-client-id", "app", "-client-secret", "s", "extra"}, wantErr: "unexpected arguments"},
		{name: "unknown flag", args: []string{"-port", "1"}, wantErr: "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := parseOptions(tt.args, envOf(tt.env), io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error got %v; want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("error got %v; want nil", err)
			}
			if opts.clientSecret != tt.wantSecret {
				t.Errorf("client secret got %q; want %q", opts.clientSecret, tt.wantSecret)
			}
			if tt.check != nil {
				tt.check(t, opts)
			}
		})
	}
}

func TestParseOptionsHelp(t *testing.T) {
	var output bytes.Buffer
	_, err := parseOptions([]string{"-h"}, envOf(nil), &output)
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("error got %v; want flag.ErrHelp", err)
	}
	if !strings.Contains(output.String(), "-token-lifetime") {
		t.Errorf("help output got %q; want the flag list", output.String())
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	// guards buf
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRunServesTokens(t *testing.T) {
	const secret = "do-not-log-this"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var logs syncBuffer
	addrs := make(chan string, 1)
	done := make(chan error, 1)
	args := []string{"-addr", "127.0.0.1:0", "-client-id", "app", "-token-lifetime", "45s", "-control"}
	go func() {
		done <- run(ctx, args, envOf(map[string]string{secretEnvVar: secret}), &logs, func(addr string) { addrs <- addr })
	}()

	var addr string
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatalf("run returned %v before listening; want it to serve", err)
	case <-time.After(10 * time.Second):
		t.Fatalf("run did not listen within 10s")
	}

	client := &http.Client{Timeout: 10 * time.Second}
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/api/auth/oauth2/token", strings.NewReader("grant_type=client_credentials"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("app:"+secret)))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("token request failed: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("token status got %d (%s); want 200", resp.StatusCode, body)
	}
	if !strings.Contains(string(body), `"expires_in":45`) {
		t.Errorf("token body got %s; want expires_in 45", body)
	}

	resp, err = client.Get("http://" + addr + "/_control/stats")
	if err != nil {
		t.Fatalf("stats request failed: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("stats status got %d; want 200 with -control", resp.StatusCode)
	}
	client.CloseIdleConnections()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run error got %v; want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("run did not stop within 10s of cancel")
	}

	output := logs.String()
	if strings.Contains(output, secret) {
		t.Errorf("log output contains the client secret: %q", output)
	}
	if got := strings.Count(output, "taskmaster started"); got != 1 {
		t.Errorf("start log lines got %d (%q); want 1", got, output)
	}
	if !strings.Contains(output, "addr="+addr) {
		t.Errorf("log output got %q; want the bound address %s", output, addr)
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	err := run(context.Background(), []string{"-client-id", "app", "-client-secret", "s", "-addr", "0.0.0.0:0"}, envOf(nil), io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("error got %v; want a loopback error", err)
	}
}
