package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/authproxy/authproxy/tokencache"
)

// serverMetadata holds the fields of OpenID Connect Discovery 1.0 and
// RFC 8414 authorization server metadata that the sidecar uses.
type serverMetadata struct {
	Issuer            string   `json:"issuer"`
	TokenEndpoint     string   `json:"token_endpoint"`
	TokenAuthMethods  []string `json:"token_endpoint_auth_methods_supported"`
	GrantTypes        []string `json:"grant_types_supported"`
	SigningAlgorithms []string `json:"token_endpoint_auth_signing_alg_values_supported"`
}

// checkAuthMethod reports whether the server lists method. RFC 8414
// section 2 defines an absent list as client_secret_basic only.
func (m *serverMetadata) checkAuthMethod(method tokencache.AuthMethod) error {
	supported := m.TokenAuthMethods
	if len(supported) == 0 {
		supported = []string{string(tokencache.ClientSecretBasic)}
	}
	if !slices.Contains(supported, string(method)) {
		return fmt.Errorf("TOKEN_AUTH_METHOD: the issuer does not support %q; it lists %s, so set TOKEN_AUTH_METHOD to one of them",
			method, strings.Join(supported, ", "))
	}
	return nil
}

// discoveryAttempts bounds how often discovery is tried at startup before
// the sidecar gives up and exits, letting its supervisor restart it.
const discoveryAttempts = 5

// discover reads the issuer's metadata, trying the OpenID Connect location
// first and then the RFC 8414 one, with retries for network failures.
func discover(ctx context.Context, client *http.Client, issuer string, log *zap.Logger) (*serverMetadata, error) {
	log.Info("reading the issuer's metadata to find the token endpoint; until then the proxy returns 503",
		zap.String("issuer", issuer))
	var lastErr error
	delay := time.Second
	for attempt := 1; attempt <= discoveryAttempts; attempt++ {
		for _, u := range metadataURLs(issuer) {
			meta, err := fetchMetadata(ctx, client, u)
			if err == nil {
				if strings.TrimSuffix(meta.Issuer, "/") != strings.TrimSuffix(issuer, "/") {
					return nil, fmt.Errorf("ISSUER_URL: metadata at %s names issuer %q, not %q; set ISSUER_URL to the issuer exactly", u, meta.Issuer, issuer)
				}
				if meta.TokenEndpoint == "" {
					return nil, fmt.Errorf("ISSUER_URL: metadata at %s has no token_endpoint; set TOKEN_URL instead", u)
				}
				log.Info("discovered token endpoint", zap.String("metadata_url", u), zap.String("token_url", meta.TokenEndpoint))
				return meta, nil
			}
			lastErr = err
		}
		if attempt == discoveryAttempts {
			break
		}
		log.Warn("issuer metadata unavailable; retrying", zap.Error(lastErr), zap.Duration("retry_in", delay))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay *= 2
	}
	return nil, fmt.Errorf("ISSUER_URL: cannot read the issuer's metadata after %d attempts: %w; check the URL or set TOKEN_URL", discoveryAttempts, lastErr)
}

// metadataURLs returns the OpenID Connect Discovery URL (path appended) and
// the RFC 8414 URL (well-known segment inserted before the path).
func metadataURLs(issuer string) []string {
	u, err := url.Parse(strings.TrimSuffix(issuer, "/"))
	if err != nil {
		return nil
	}
	oidc := *u
	oidc.Path = u.Path + "/.well-known/openid-configuration"
	rfc8414 := *u
	rfc8414.Path = "/.well-known/oauth-authorization-server" + u.Path
	return []string{oidc.String(), rfc8414.String()}
}

func fetchMetadata(ctx context.Context, client *http.Client, u string) (*serverMetadata, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %s", u, resp.Status)
	}
	var meta serverMetadata
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&meta); err != nil {
		return nil, fmt.Errorf("GET %s: invalid metadata JSON: %v", u, err)
	}
	return &meta, nil
}
