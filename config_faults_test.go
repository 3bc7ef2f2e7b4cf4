package main

import (
	"net"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// lockedDownEnv is a valid configuration that each case below changes.
func lockedDownEnv(changes map[string]string) map[string]string {
	env := map[string]string{
		"CLIENT_ID":     "client-1",
		"CLIENT_SECRET": "config-secret-value",
		"UPSTREAM_URL":  "https://api.example.com",
		"ADMIN_ADDR":    "127.0.0.1:9090",
	}
	for k, v := range changes {
		env[k] = v
	}
	return env
}

// checkConfigOutcome checks that loadConfig accepts env, or rejects it with
// an error naming variable and every word in hints.
func checkConfigOutcome(t *testing.T, env map[string]string, wantErr bool, variable string, hints ...string) {
	t.Helper()
	_, errs := loadConfig(env)
	if !wantErr {
		if len(errs) != 0 {
			t.Errorf("loadConfig() errors = %v; want none", errs)
		}
		return
	}
	var matched []string
	for _, err := range errs {
		if strings.HasPrefix(err.Error(), variable) {
			matched = append(matched, err.Error())
		}
	}
	if len(matched) == 0 {
		t.Fatalf("loadConfig() errors = %v; want one starting with %s", errs, variable)
	}
	for _, hint := range hints {
		if !strings.Contains(matched[0], hint) {
			t.Errorf("error %q does not mention %s", matched[0], hint)
		}
	}
	if strings.Contains(matched[0], env["CLIENT_SECRET"]) {
		t.Errorf("error %q contains the client secret", matched[0])
	}
}

func TestConfigListenAddrLoopbackOnly(t *testing.T) {
	tests := []struct {
		name    string
		addr    string
		allow   string
		wantErr bool
	}{
		{"ipv4 loopback", "127.0.0.1:8080", "", false},
		{"other ipv4 loopback", "127.0.0.2:8080", "", false},
		{"ipv6 loopback", "[::1]:8080", "", false},
		{"localhost", "localhost:8080", "", false},
		{"all interfaces", "0.0.0.0:8080", "", true},
		{"empty host", ":8080", "", true},
		{"ipv6 all interfaces", "[::]:8080", "", true},
		{"private address", "10.0.0.5:8080", "", true},
		{"host name", "sidecar.internal:8080", "", true},
		{"all interfaces allowed", "0.0.0.0:8080", "true", false},
		{"empty host allowed", ":8080", "true", false},
		{"allowed false", "0.0.0.0:8080", "false", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := lockedDownEnv(map[string]string{"LISTEN_ADDR": tt.addr, "ALLOW_NON_LOOPBACK_LISTEN": tt.allow})
			checkConfigOutcome(t, env, tt.wantErr, "LISTEN_ADDR", "ALLOW_NON_LOOPBACK_LISTEN")
		})
	}
}

func TestConfigNonLoopbackListenWarns(t *testing.T) {
	cfg, errs := loadConfig(lockedDownEnv(map[string]string{
		"LISTEN_ADDR": "0.0.0.0:8080", "ALLOW_NON_LOOPBACK_LISTEN": "true",
	}))
	if len(errs) != 0 {
		t.Fatalf("loadConfig() errors = %v; want none", errs)
	}
	admin := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9090}
	tests := []struct {
		name   string
		addr   net.Addr
		warned bool
	}{
		{"all interfaces", &net.TCPAddr{IP: net.IPv4zero, Port: 8080}, true},
		{"ipv6 all interfaces", &net.TCPAddr{IP: net.IPv6unspecified, Port: 8080}, true},
		{"loopback", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			logStart(zap.New(core), cfg, tt.addr, admin)
			warnings := logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("other hosts can reach").All()
			if tt.warned && len(warnings) != 1 {
				t.Errorf("got %d warnings about the listen address; want 1", len(warnings))
			}
			if !tt.warned && len(warnings) != 0 {
				t.Errorf("got %d warnings about the listen address; want 0", len(warnings))
			}
			for _, e := range logs.All() {
				for k, v := range e.ContextMap() {
					if s, ok := v.(string); ok && strings.Contains(s, "config-secret-value") {
						t.Errorf("log field %s of %q contains the client secret", k, e.Message)
					}
				}
			}
		})
	}
}

func TestConfigPlainHTTPOnlyToLoopback(t *testing.T) {
	tests := []struct {
		name    string
		key     string
		value   string
		allow   string
		wantErr bool
	}{
		{"upstream https", "UPSTREAM_URL", "https://api.example.com", "", false},
		{"upstream http remote", "UPSTREAM_URL", "http://api.example.com", "", true},
		{"upstream http private ip", "UPSTREAM_URL", "http://10.1.2.3:8080", "", true},
		{"upstream http loopback ip", "UPSTREAM_URL", "http://127.0.0.1:8081", "", false},
		{"upstream http ipv6 loopback", "UPSTREAM_URL", "http://[::1]:8081", "", false},
		{"upstream http localhost", "UPSTREAM_URL", "http://localhost:8081", "", false},
		{"upstream http localhost upper case", "UPSTREAM_URL", "http://LOCALHOST:8081", "", false},
		{"upstream http look-alike", "UPSTREAM_URL", "http://127.0.0.1.example.com", "", true},
		{"upstream http localhost subdomain", "UPSTREAM_URL", "http://localhost.example.com", "", true},
		{"upstream http remote allowed", "UPSTREAM_URL", "http://api.example.com", "true", false},
		{"token url http remote", "TOKEN_URL", "http://auth.example.com/token", "", true},
		{"token url http remote allowed", "TOKEN_URL", "http://auth.example.com/token", "true", false},
		{"token url http loopback", "TOKEN_URL", "http://127.0.0.1:4444/oauth2/token", "", false},
		{"issuer url http remote", "ISSUER_URL", "http://auth.example.com", "", true},
		{"token url ftp", "TOKEN_URL", "ftp://auth.example.com/token", "true", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := lockedDownEnv(map[string]string{tt.key: tt.value, "ALLOW_INSECURE_HTTP": tt.allow})
			hints := []string{}
			if tt.allow == "" {
				hints = append(hints, "ALLOW_INSECURE_HTTP")
			}
			checkConfigOutcome(t, env, tt.wantErr, tt.key, hints...)
		})
	}
}

func TestConfigDefaultTokenURLFollowsUpstream(t *testing.T) {
	cfg, errs := loadConfig(lockedDownEnv(nil))
	if len(errs) != 0 {
		t.Fatalf("loadConfig() errors = %v; want none", errs)
	}
	if got, want := cfg.tokenURL.String(), "https://api.example.com/api/auth/oauth2/token"; got != want {
		t.Errorf("token URL = %q; want %q", got, want)
	}
}

func TestConfigRequiredHeaderPair(t *testing.T) {
	tests := []struct {
		name     string
		header   string
		value    string
		wantErr  bool
		variable string
	}{
		{"neither", "", "", false, ""},
		{"both", "X-Sidecar-Key", "k-123", false, ""},
		{"name only", "X-Sidecar-Key", "", true, "REQUIRED_HEADER_NAME"},
		{"value only", "", "k-123", true, "REQUIRED_HEADER_NAME"},
		{"name with space", "X Sidecar", "k-123", true, "REQUIRED_HEADER_NAME"},
		{"name with colon", "X-Key:", "k-123", true, "REQUIRED_HEADER_NAME"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := lockedDownEnv(map[string]string{"REQUIRED_HEADER_NAME": tt.header, "REQUIRED_HEADER_VALUE": tt.value})
			checkConfigOutcome(t, env, tt.wantErr, tt.variable)
		})
	}
}
