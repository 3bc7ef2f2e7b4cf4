package main

import (
	"net"
	"strings"
	"testing"
)

// FuzzLoadConfig feeds fuzzed values to loadConfig. It must not panic;
// an accepted configuration must keep the locked-down rules, and no
// error may repeat the client secret.
func FuzzLoadConfig(f *testing.F) {
	f.Add("127.0.0.1:8080", "https://api.example.com", "", "fuzz-secret-value", "10s", "", "")
	f.Add("0.0.0.0:8080", "http://api.example.com", "http://auth.example.com/t", "fuzz-secret-value", "0s", "true", "true")
	f.Add(":8080", "http://localhost:8081/base", "", "fuzz-secret-value", "-1s", "yes", "1")
	f.Add("[::1]:80", "https://user:pw@api.example.com", "https://auth#frag", "fuzz-secret-value", "5", "false", "0")
	f.Add("127.0.0.1", "ftp://x", "http://127.0.0.1.example.com/t", "fuzz-secret-value", "1h", "", "")
	f.Fuzz(func(t *testing.T, listen, upstream, tokenURL, secret, timeout, allowInsecure, allowListen string) {
		env := map[string]string{
			"CLIENT_ID":                 "client-1",
			"CLIENT_SECRET":             secret,
			"LISTEN_ADDR":               listen,
			"ADMIN_ADDR":                "127.0.0.1:9090",
			"UPSTREAM_URL":              upstream,
			"TOKEN_URL":                 tokenURL,
			"TOKEN_TIMEOUT":             timeout,
			"ALLOW_INSECURE_HTTP":       allowInsecure,
			"ALLOW_NON_LOOPBACK_LISTEN": allowListen,
		}
		cfg, errs := loadConfig(env)
		if len(secret) >= 8 && !strings.Contains(listen+upstream+tokenURL+timeout+allowInsecure+allowListen, secret) {
			for _, err := range errs {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q repeats the client secret", err)
				}
			}
		}
		if len(errs) > 0 {
			return
		}
		if cfg.upstream == nil || cfg.tokenURL == nil {
			t.Fatalf("accepted configuration without an upstream or token URL: %+v", env)
		}
		if cfg.upstream.User != nil || cfg.tokenURL.User != nil {
			t.Errorf("accepted a URL with credentials in it: %+v", env)
		}
		for _, u := range []struct{ scheme, host string }{
			{cfg.upstream.Scheme, cfg.upstream.Hostname()},
			{cfg.tokenURL.Scheme, cfg.tokenURL.Hostname()},
		} {
			if u.scheme != "https" && u.scheme != "http" {
				t.Errorf("accepted scheme %q", u.scheme)
			}
			if u.scheme == "http" && !cfg.AllowInsecureHTTP && !isLoopbackHost(u.host) {
				t.Errorf("accepted plain http to %q without ALLOW_INSECURE_HTTP", u.host)
			}
		}
		host, _, err := net.SplitHostPort(cfg.ListenAddr)
		if err != nil {
			t.Errorf("accepted LISTEN_ADDR %q that is not host:port", cfg.ListenAddr)
		}
		if !cfg.AllowNonLoopbackListen && !isLoopbackHost(host) {
			t.Errorf("accepted LISTEN_ADDR %q without ALLOW_NON_LOOPBACK_LISTEN", cfg.ListenAddr)
		}
		if cfg.TokenTimeout <= 0 {
			t.Errorf("accepted TOKEN_TIMEOUT %v", cfg.TokenTimeout)
		}
	})
}
