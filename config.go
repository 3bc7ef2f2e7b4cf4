package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/authproxy/authproxy/proxy"
	"github.com/authproxy/authproxy/tokencache"
)

// Config is the sidecar's configuration, read from environment variables.
// Each field's help tag is what -help prints. An empty variable counts as
// unset. Durations need a unit, such as 30s or 5m.
type Config struct {
	ClientID             string `env:"CLIENT_ID" help:"OAuth client id (required)"`
	ClientSecret         string `env:"CLIENT_SECRET" help:"client secret; set exactly one of CLIENT_SECRET and CLIENT_SECRET_FILE"`
	ClientSecretFile     string `env:"CLIENT_SECRET_FILE" help:"file holding the client secret, such as a mounted Kubernetes Secret; trailing CR and LF are removed, and the file is re-read when it changes and after an invalid_client answer"`
	ClientPrivateKeyFile string `env:"CLIENT_PRIVATE_KEY_FILE" help:"PEM private key (RSA or EC) that signs the client assertion for private_key_jwt"`
	ClientKeyID          string `env:"CLIENT_KEY_ID" help:"kid header of the client assertion for private_key_jwt"`
	UpstreamURL          string `env:"UPSTREAM_URL" envDefault:"https://taskmaster-speakeasyapi.vercel.app" help:"base URL requests are forwarded to; a path in it prefixes every request path"`
	TokenURL             string `env:"TOKEN_URL" help:"token endpoint; default: UPSTREAM_URL + /api/auth/oauth2/token, or the issuer's token_endpoint when ISSUER_URL is set"`
	IssuerURL            string `env:"ISSUER_URL" help:"issuer whose metadata (/.well-known/openid-configuration or RFC 8414) gives the token endpoint when TOKEN_URL is not set"`
	TokenAuthMethod      string `env:"TOKEN_AUTH_METHOD" envDefault:"client_secret_basic" help:"client authentication: client_secret_basic, client_secret_post or private_key_jwt"`
	Scopes               string `env:"SCOPES" help:"space-separated scopes to request"`
	Audience             string `env:"AUDIENCE" help:"audience parameter of the token request"`
	TokenParams          string `env:"TOKEN_PARAMS" help:"extra token request parameters, URL-encoded, such as resource=https%3A%2F%2Fapi.example.com"`
	CAFile               string `env:"CA_FILE" help:"PEM bundle trusted in addition to the system CAs, for the upstream and the token endpoint"`

	ListenAddr             string `env:"LISTEN_ADDR" envDefault:"127.0.0.1:8080" help:"proxy listen address"`
	AdminAddr              string `env:"ADMIN_ADDR" envDefault:":9090" help:"metrics and health listen address"`
	AllowNonLoopbackListen bool   `env:"ALLOW_NON_LOOPBACK_LISTEN" envDefault:"false" help:"allow a LISTEN_ADDR other than loopback; anyone who can reach it then acts with the sidecar's credential"`
	AllowInsecureHTTP      bool   `env:"ALLOW_INSECURE_HTTP" envDefault:"false" help:"allow plain http for UPSTREAM_URL, TOKEN_URL and ISSUER_URL on hosts other than loopback"`
	RequiredHeaderName     string `env:"REQUIRED_HEADER_NAME" help:"header every proxied request must carry, else 403; it is not forwarded"`
	RequiredHeaderValue    string `env:"REQUIRED_HEADER_VALUE" help:"value REQUIRED_HEADER_NAME must have"`

	LogLevel  string `env:"LOG_LEVEL" envDefault:"info" help:"debug, info, warn or error"`
	LogFormat string `env:"LOG_FORMAT" envDefault:"json" help:"json or console"`

	TokenTimeout               time.Duration `env:"TOKEN_TIMEOUT" envDefault:"10s" help:"time limit of one token request"`
	TokenDefaultLifetime       time.Duration `env:"TOKEN_DEFAULT_LIFETIME" envDefault:"5m" help:"token lifetime assumed when a response has no usable expires_in"`
	TokenRefreshRatio          float64       `env:"TOKEN_REFRESH_RATIO" envDefault:"0.8" help:"share of a token's lifetime after which it is refreshed in the background, between 0 and 1"`
	TokenRefreshMinMargin      time.Duration `env:"TOKEN_REFRESH_MIN_MARGIN" envDefault:"10s" help:"minimum time before expiry at which the refresh runs (capped at half the lifetime)"`
	TokenExpiryLeeway          time.Duration `env:"TOKEN_EXPIRY_LEEWAY" envDefault:"5s" help:"a token is not sent once it is this close to expiry (capped at a quarter of the lifetime)"`
	TokenRetryMin              time.Duration `env:"TOKEN_RETRY_MIN" envDefault:"1s" help:"first backoff after a failed token request; it doubles per failure"`
	TokenRetryMax              time.Duration `env:"TOKEN_RETRY_MAX" envDefault:"30s" help:"maximum backoff between failed token requests, unless the server's Retry-After requests more"`
	TokenForcedRefreshInterval time.Duration `env:"TOKEN_FORCED_REFRESH_INTERVAL" envDefault:"5s" help:"minimum time between forced refreshes after an upstream 401 or a SIGHUP"`
	UpstreamTimeout            time.Duration `env:"UPSTREAM_TIMEOUT" envDefault:"60s" help:"time limit for the upstream's response headers; 504 after it"`
	ShutdownGrace              time.Duration `env:"SHUTDOWN_GRACE" envDefault:"20s" help:"time in-flight requests get to finish after SIGTERM"`
	ShutdownDelay              time.Duration `env:"SHUTDOWN_DELAY" envDefault:"0s" help:"time between reporting not ready and closing the listener after SIGTERM"`
	ReadHeaderTimeout          time.Duration `env:"READ_HEADER_TIMEOUT" envDefault:"10s" help:"time limit for a client to send request headers"`
	IdleTimeout                time.Duration `env:"IDLE_TIMEOUT" envDefault:"120s" help:"how long an idle client keep-alive connection stays open"`
	MaxHeaderBytes             int           `env:"MAX_HEADER_BYTES" envDefault:"65536" help:"largest request header block accepted from a client, in bytes (net/http allows 4096 bytes more); larger ones get 431"`
	MaxReplayBodyBytes         int64         `env:"MAX_REPLAY_BODY_BYTES" envDefault:"1048576" help:"largest request body buffered so the request can be replayed after a 401, in bytes; 0 turns replay of bodies off"`

	// derived values, filled by validate.
	upstream   *url.URL
	tokenURL   *url.URL
	scopes     []string
	params     url.Values
	authMethod tokencache.AuthMethod
}

// loadConfig reads the configuration from environ and returns every problem
// found, each naming the variable and an accepted value.
func loadConfig(environ map[string]string) (*Config, []error) {
	cfg := &Config{}
	err := env.ParseWithOptions(cfg, env.Options{Environment: environ})
	var errs []error
	invalid := map[string]bool{}
	if err != nil {
		errs = append(errs, explainEnvErrors(err, invalid)...)
	}
	errs = append(errs, cfg.validate(invalid)...)
	return cfg, errs
}

// explainEnvErrors rewrites env's errors to name the variable and an
// accepted value, and marks the variables that failed to parse in invalid.
func explainEnvErrors(err error, invalid map[string]bool) []error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return []error{err}
	}
	keys := fieldKeys()
	var out []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			key := keys[pe.Name]
			invalid[key] = true
			out = append(out, fmt.Errorf("%s: invalid value (%v); %s", key, pe.Err, acceptedForm(pe.Type)))
			continue
		}
		out = append(out, e)
	}
	return out
}

func acceptedForm(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[time.Duration]():
		return "use a duration with a unit, such as 30s or 5m"
	case reflect.TypeFor[bool]():
		return "use true or false"
	case reflect.TypeFor[float64]():
		return "use a decimal number, such as 0.8"
	case reflect.TypeFor[int](), reflect.TypeFor[int64]():
		return "use a whole number, such as 65536"
	}
	return "see -help"
}

// fieldKeys maps Config field names to their variable names.
func fieldKeys() map[string]string {
	keys := map[string]string{}
	t := reflect.TypeFor[Config]()
	for i := 0; i < t.NumField(); i++ {
		if key := t.Field(i).Tag.Get("env"); key != "" {
			keys[t.Field(i).Name] = key
		}
	}
	return keys
}

// validate checks values and fills the derived fields. Variables in
// invalid already failed to parse and are not reported again.
func (c *Config) validate(invalid map[string]bool) []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.ClientID == "" {
		add("CLIENT_ID is missing: set it to the client id the authorization server issued")
	}
	c.authMethod = tokencache.AuthMethod(c.TokenAuthMethod)
	switch c.authMethod {
	case tokencache.ClientSecretBasic, tokencache.ClientSecretPost:
		switch {
		case c.ClientSecret == "" && c.ClientSecretFile == "":
			add("CLIENT_SECRET or CLIENT_SECRET_FILE is missing: set exactly one, for example CLIENT_SECRET_FILE=/var/run/secrets/authproxy/client-secret")
		case c.ClientSecret != "" && c.ClientSecretFile != "":
			add("CLIENT_SECRET and CLIENT_SECRET_FILE are both set: keep only one")
		case c.ClientSecretFile != "":
			if err := checkSecretFile(c.ClientSecretFile); err != nil {
				add("CLIENT_SECRET_FILE: %v", err)
			}
		}
		if c.ClientPrivateKeyFile != "" {
			add("CLIENT_PRIVATE_KEY_FILE is set but TOKEN_AUTH_METHOD is %s, which does not use it; set TOKEN_AUTH_METHOD=private_key_jwt or remove the key file setting", c.TokenAuthMethod)
		}
	case tokencache.PrivateKeyJWT:
		switch {
		case c.ClientPrivateKeyFile == "":
			add("CLIENT_PRIVATE_KEY_FILE is missing: private_key_jwt needs a PEM private key (RSA or EC), for example CLIENT_PRIVATE_KEY_FILE=/var/run/secrets/authproxy/client-key.pem")
		default:
			if _, err := tokencache.NewAssertionSigner(c.ClientPrivateKeyFile, c.ClientID, c.ClientKeyID); err != nil {
				add("CLIENT_PRIVATE_KEY_FILE: %v; use a PEM file holding an RSA (2048 bits or more) or EC P-256/P-384/P-521 private key", err)
			}
		}
		if c.ClientSecret != "" || c.ClientSecretFile != "" {
			add("CLIENT_SECRET or CLIENT_SECRET_FILE is set but private_key_jwt does not use a secret; remove it")
		}
	default:
		add("TOKEN_AUTH_METHOD: %q is not supported; use client_secret_basic, client_secret_post or private_key_jwt", c.TokenAuthMethod)
	}

	var err error
	if c.upstream, err = c.checkURL("UPSTREAM_URL", c.UpstreamURL); err != nil {
		errs = append(errs, err)
	}
	switch {
	case c.TokenURL != "":
		if c.tokenURL, err = c.checkURL("TOKEN_URL", c.TokenURL); err != nil {
			errs = append(errs, err)
		}
	case c.IssuerURL != "":
		if _, err = c.checkURL("ISSUER_URL", c.IssuerURL); err != nil {
			errs = append(errs, err)
		}
	case c.upstream != nil:
		c.tokenURL = c.upstream.JoinPath("/api/auth/oauth2/token")
	}

	if c.CAFile != "" {
		if _, err := proxy.TLSConfig(c.CAFile); err != nil {
			add("CA_FILE: %v; point it at a PEM bundle of CA certificates", err)
		}
	}

	c.scopes = strings.Fields(c.Scopes)
	if c.params, err = url.ParseQuery(c.TokenParams); err != nil {
		add("TOKEN_PARAMS: %v; use URL-encoded pairs, such as resource=https%%3A%%2F%%2Fapi.example.com&x=y", err)
	}
	for _, reserved := range []string{"grant_type", "client_id", "client_secret", "client_assertion", "client_assertion_type", "scope", "audience"} {
		if c.params.Has(reserved) {
			add("TOKEN_PARAMS: %s cannot be set here; it comes from the other settings (SCOPES, AUDIENCE, CLIENT_ID, TOKEN_AUTH_METHOD)", reserved)
		}
	}
	if c.Audience != "" {
		c.params.Set("audience", c.Audience)
	}

	errs = append(errs, c.checkListenAddrs()...)
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add("LOG_LEVEL: %q is not a level; use debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "json" && c.LogFormat != "console" {
		add("LOG_FORMAT: %q is not supported; use json or console", c.LogFormat)
	}
	if (c.RequiredHeaderName == "") != (c.RequiredHeaderValue == "") {
		add("REQUIRED_HEADER_NAME and REQUIRED_HEADER_VALUE must be set together")
	} else if c.RequiredHeaderName != "" && !isHeaderToken(c.RequiredHeaderName) {
		add("REQUIRED_HEADER_NAME: %q is not a valid header name; use letters, digits and dashes, such as X-Sidecar-Key", c.RequiredHeaderName)
	}
	errs = append(errs, c.checkNumbers(invalid)...)
	return errs
}

// checkNumbers rejects durations and sizes that make no sense.
func (c *Config) checkNumbers(invalid map[string]bool) []error {
	var errs []error
	positive := []struct {
		key string
		d   time.Duration
	}{
		{"TOKEN_TIMEOUT", c.TokenTimeout},
		{"TOKEN_DEFAULT_LIFETIME", c.TokenDefaultLifetime},
		{"TOKEN_REFRESH_MIN_MARGIN", c.TokenRefreshMinMargin},
		{"TOKEN_EXPIRY_LEEWAY", c.TokenExpiryLeeway},
		{"TOKEN_RETRY_MIN", c.TokenRetryMin},
		{"TOKEN_RETRY_MAX", c.TokenRetryMax},
		{"TOKEN_FORCED_REFRESH_INTERVAL", c.TokenForcedRefreshInterval},
		{"UPSTREAM_TIMEOUT", c.UpstreamTimeout},
		{"SHUTDOWN_GRACE", c.ShutdownGrace},
		{"READ_HEADER_TIMEOUT", c.ReadHeaderTimeout},
		{"IDLE_TIMEOUT", c.IdleTimeout},
	}
	for _, p := range positive {
		if p.d <= 0 && !invalid[p.key] {
			errs = append(errs, fmt.Errorf("%s: %v is not positive; use a duration with a unit, such as 30s", p.key, p.d))
		}
	}
	if c.ShutdownDelay < 0 {
		errs = append(errs, fmt.Errorf("SHUTDOWN_DELAY: %v is negative; use 0s or more, such as 5s", c.ShutdownDelay))
	}
	if c.TokenRefreshRatio <= 0 || c.TokenRefreshRatio >= 1 {
		errs = append(errs, fmt.Errorf("TOKEN_REFRESH_RATIO: %v is outside (0, 1); use a share such as 0.8", c.TokenRefreshRatio))
	}
	if c.TokenRetryMin > c.TokenRetryMax {
		errs = append(errs, fmt.Errorf("TOKEN_RETRY_MIN (%v) exceeds TOKEN_RETRY_MAX (%v); lower the first or raise the second", c.TokenRetryMin, c.TokenRetryMax))
	}
	if c.TokenRefreshMinMargin <= c.TokenExpiryLeeway {
		errs = append(errs, fmt.Errorf("TOKEN_REFRESH_MIN_MARGIN (%v) must exceed TOKEN_EXPIRY_LEEWAY (%v), or the token would stop being served before its refresh", c.TokenRefreshMinMargin, c.TokenExpiryLeeway))
	}
	if c.MaxHeaderBytes < 4096 {
		errs = append(errs, fmt.Errorf("MAX_HEADER_BYTES: %d is too small; use 4096 or more, such as 65536", c.MaxHeaderBytes))
	}
	if c.MaxReplayBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("MAX_REPLAY_BODY_BYTES: %d is negative; use 0 or more, such as 1048576", c.MaxReplayBodyBytes))
	}
	return errs
}

// checkURL parses an http or https URL. Plain http is accepted only for a
// loopback host, unless ALLOW_INSECURE_HTTP is set, so that the secret
// never crosses a network unencrypted by accident.
func (c *Config) checkURL(key, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: %q is not a URL (%v); use a form such as https://api.example.com", key, raw, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%s: %q must start with https:// (or http:// for a loopback host)", key, raw)
	case u.Host == "":
		return nil, fmt.Errorf("%s: %q has no host; use a form such as https://api.example.com", key, raw)
	case u.User != nil:
		return nil, fmt.Errorf("%s: credentials in the URL are not allowed; use CLIENT_ID and CLIENT_SECRET", key)
	case u.Port() != "" && !validPort(u.Port()):
		return nil, fmt.Errorf("%s: %q has an invalid port; use a number from 1 to 65535", key, raw)
	case u.Fragment != "":
		return nil, fmt.Errorf("%s: %q has a fragment (#...); remove it", key, raw)
	case u.Scheme == "http" && !isLoopbackHost(u.Hostname()) && !c.AllowInsecureHTTP:
		return nil, fmt.Errorf("%s: %q uses plain http to a host that is not loopback; use https, or set ALLOW_INSECURE_HTTP=true to accept the risk", key, raw)
	}
	return u, nil
}

// checkListenAddrs validates LISTEN_ADDR and ADMIN_ADDR.
func (c *Config) checkListenAddrs() []error {
	var errs []error
	host, _, err := net.SplitHostPort(c.ListenAddr)
	if err != nil {
		errs = append(errs, fmt.Errorf("LISTEN_ADDR: %q is not host:port (%v); use a form such as 127.0.0.1:8080", c.ListenAddr, err))
	} else if !isLoopbackHost(host) && !c.AllowNonLoopbackListen {
		errs = append(errs, fmt.Errorf("LISTEN_ADDR: %q is reachable from other hosts, which could then use the sidecar's credential; use 127.0.0.1:8080, or set ALLOW_NON_LOOPBACK_LISTEN=true to accept the risk", c.ListenAddr))
	}
	if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
		errs = append(errs, fmt.Errorf("ADMIN_ADDR: %q is not host:port (%v); use a form such as :9090", c.AdminAddr, err))
	}
	if c.ListenAddr == c.AdminAddr {
		errs = append(errs, fmt.Errorf("LISTEN_ADDR and ADMIN_ADDR are both %q; give the admin port its own address, such as :9090", c.ListenAddr))
	}
	return errs
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// isLoopbackHost reports whether host is localhost or a loopback IP.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkSecretFile makes sure the secret file is readable and not empty, so
// that the sidecar never starts with an empty credential.
func checkSecretFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("cannot read the secret file: %v; mount the Secret at that path or fix the path", err)
	}
	if strings.TrimRight(string(data), "\r\n") == "" {
		return fmt.Errorf("%s is empty; write the client secret into it", path)
	}
	return nil
}

// printHelp writes every variable with its default and meaning.
func printHelp(w io.Writer) {
	fmt.Fprintf(w, "authproxy %s: an OAuth2 client-credentials sidecar.\n\n", version)
	fmt.Fprintln(w, "Usage: authproxy [-help | -version | healthcheck]")
	fmt.Fprintln(w, "\nConfiguration comes from environment variables; an empty value counts as unset.")
	fmt.Fprintln(w, "Durations need a unit, such as 30s or 5m.")
	fmt.Fprintln(w)
	t := reflect.TypeFor[Config]()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key := f.Tag.Get("env")
		if key == "" {
			continue
		}
		def := f.Tag.Get("envDefault")
		if def == "" {
			def = "(none)"
		}
		fmt.Fprintf(w, "  %s\n      default: %s\n      %s\n", key, def, f.Tag.Get("help"))
	}
}

// isHeaderToken reports whether name is a valid header field name, a token
// as RFC 9110 section 5.6.2 defines it.
func isHeaderToken(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if r > 0x7e || r <= ' ' || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", r) {
			return false
		}
	}
	return true
}
