package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/authproxy/authproxy/proxy"
	"github.com/authproxy/authproxy/tokencache"
)

// newFetcher builds the token fetcher and, with CLIENT_SECRET_FILE, the
// secret file it reads.
func newFetcher(ctx context.Context, cfg *Config, log *zap.Logger) (*tokencache.ClientCredentials, *tokencache.SecretFile, error) {
	client, err := tokenHTTPClient(cfg.CAFile)
	if err != nil {
		return nil, nil, fmt.Errorf("CA_FILE: %w", err)
	}
	if cfg.tokenURL == nil {
		meta, err := discover(ctx, client, cfg.IssuerURL, log)
		if err != nil {
			return nil, nil, err
		}
		if err := meta.checkAuthMethod(cfg.authMethod); err != nil {
			return nil, nil, err
		}
		if cfg.tokenURL, err = cfg.checkURL("token_endpoint of ISSUER_URL", meta.TokenEndpoint); err != nil {
			return nil, nil, err
		}
	}
	f := &tokencache.ClientCredentials{
		TokenURL:   cfg.tokenURL.String(),
		ClientID:   cfg.ClientID,
		Method:     cfg.authMethod,
		Scopes:     cfg.scopes,
		Params:     cfg.params,
		HTTPClient: client,
	}
	var secretFile *tokencache.SecretFile
	switch {
	case cfg.authMethod == tokencache.PrivateKeyJWT:
		signer, err := tokencache.NewAssertionSigner(cfg.ClientPrivateKeyFile, cfg.ClientID, cfg.ClientKeyID)
		if err != nil {
			return nil, nil, fmt.Errorf("CLIENT_PRIVATE_KEY_FILE: %w", err)
		}
		f.Signer = signer
	case cfg.ClientSecretFile != "":
		secretFile, err = tokencache.NewSecretFile(cfg.ClientSecretFile, log.Named("secret"))
		if err != nil {
			return nil, nil, fmt.Errorf("CLIENT_SECRET_FILE: %w", err)
		}
		f.Secret = secretFile
	default:
		f.Secret = tokencache.StaticSecret(cfg.ClientSecret)
	}
	return f, secretFile, nil
}

// tokenHTTPClient returns the client for the token endpoint. It follows no
// redirects, so the credentials are never re-sent to another URL; a
// redirect fails the request with its status.
func tokenHTTPClient(caFile string) (*http.Client, error) {
	t, err := proxy.NewTransport(proxy.TransportConfig{CAFile: caFile, MaxIdleConns: 2})
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}, nil
}

// paramNames lists the extra token parameters by name only, since their
// values may be sensitive.
func paramNames(cfg *Config) []string {
	names := make([]string, 0, len(cfg.params))
	for k := range cfg.params {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

func isLoopbackAddr(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// healthcheck calls /healthz on the admin port, for container images that
// have no curl. It exits 0 when the sidecar responds 200.
func healthcheck(env map[string]string, stderr io.Writer) int {
	addr := env["ADMIN_ADDR"]
	if addr == "" {
		addr = ":9090"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: ADMIN_ADDR %q is not host:port\n", addr)
		return 1
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "healthcheck: /healthz returned %s\n", resp.Status)
		return 1
	}
	return 0
}
