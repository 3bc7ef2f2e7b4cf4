package hydra_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/authproxy/authproxy/internal/hydratest"
)

// TestClientSecretMethods checks both secret methods against Hydra, which
// accepts only the method registered for each client: the sidecar gets a
// token with the matching TOKEN_AUTH_METHOD and is rejected with the other.
func TestClientSecretMethods(t *testing.T) {
	tests := []struct {
		method hydratest.AuthMethod
		other  hydratest.AuthMethod
	}{
		{hydratest.ClientSecretBasic, hydratest.ClientSecretPost},
		{hydratest.ClientSecretPost, hydratest.ClientSecretBasic},
	}
	for _, tt := range tests {
		t.Run(string(tt.method), func(t *testing.T) {
			h := hydratest.Start(t)
			up := hydratest.NewIntrospectingUpstream(t, h)
			client := h.CreateClient(t, hydratest.ClientSpec{
				ID:         "tasks-" + string(tt.method),
				Secret:     "secret-" + string(tt.method),
				AuthMethod: tt.method,
				Scopes:     []string{"tasks.read"},
			})

			t.Run("registered method", func(t *testing.T) {
				s := startSidecar(t, sidecarEnv(h, up, client))
				got := s.getTasks(t)
				if got.ClientID != client.ID {
					t.Errorf("token client_id: got %q; want %q", got.ClientID, client.ID)
				}
				if got.Path != "/api/tasks" {
					t.Errorf("upstream path: got %q; want /api/tasks", got.Path)
				}
			})

			t.Run("other method rejected", func(t *testing.T) {
				env := sidecarEnv(h, up, client)
				env["TOKEN_AUTH_METHOD"] = string(tt.other)
				s := startSidecar(t, env)
				status := waitForFailedFetch(t, s)
				if status.LastErrorCode != "invalid_client" {
					t.Errorf("/tokenz last_error_code: got %q; want invalid_client", status.LastErrorCode)
				}
				resp := s.do(t, http.MethodGet, "/api/tasks", nil)
				if resp.Status != http.StatusServiceUnavailable {
					t.Errorf("GET /api/tasks status: got %d; want 503", resp.Status)
				}
			})
		})
	}
}

// TestReservedCharacterCredentials sends a client ID and secret with the
// characters that RFC 6749 section 2.3.1 form-encoding changes (":", "%",
// "/", "+" and space). Hydra form-decodes the Basic credentials, so a
// sidecar that sent them raw would be rejected.
func TestReservedCharacterCredentials(t *testing.T) {
	const (
		clientID     = "svc:tasks%20/x+y z"
		clientSecret = "s3:cr%et/p+q r"
	)
	for _, method := range []hydratest.AuthMethod{hydratest.ClientSecretBasic, hydratest.ClientSecretPost} {
		t.Run(string(method), func(t *testing.T) {
			h := hydratest.Start(t)
			up := hydratest.NewIntrospectingUpstream(t, h)
			client := h.CreateClient(t, hydratest.ClientSpec{
				ID:         clientID,
				Secret:     clientSecret,
				AuthMethod: method,
			})
			if client.ID != clientID {
				t.Fatalf("registered client ID: got %q; want %q", client.ID, clientID)
			}

			s := startSidecar(t, sidecarEnv(h, up, client))
			got := s.getTasks(t)
			if got.ClientID != clientID {
				t.Errorf("token client_id: got %q; want %q", got.ClientID, clientID)
			}
			if strings.Contains(s.log.String(), clientSecret) {
				t.Error("the sidecar log contains the client secret")
			}
		})
	}
}

// TestPrivateKeyJWT authenticates with a client assertion (RFC 7523
// section 2.2) signed by a key generated in the test, whose public half is
// registered with Hydra as the client's JWKS.
func TestPrivateKeyJWT(t *testing.T) {
	tests := []struct {
		name string
		alg  string
		key  func() (crypto.Signer, error)
	}{
		{"RS256", "RS256", func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) }},
		{"ES256", "ES256", func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := tt.key()
			if err != nil {
				t.Fatalf("generate %s key: %v", tt.alg, err)
			}
			const keyID = "authproxy-key-1"
			jwks, err := hydratest.PublicJWKS(keyID, key.Public())
			if err != nil {
				t.Fatalf("build JWKS: %v", err)
			}

			h := hydratest.Start(t)
			up := hydratest.NewIntrospectingUpstream(t, h)
			client := h.CreateClient(t, hydratest.ClientSpec{
				ID:         "jwt-" + strings.ToLower(tt.alg),
				AuthMethod: hydratest.PrivateKeyJWT,
				JWKS:       jwks,
				SigningAlg: tt.alg,
				Scopes:     []string{"tasks.read"},
			})

			env := map[string]string{
				"CLIENT_ID":               client.ID,
				"TOKEN_AUTH_METHOD":       string(hydratest.PrivateKeyJWT),
				"CLIENT_PRIVATE_KEY_FILE": writePrivateKey(t, key),
				"CLIENT_KEY_ID":           keyID,
				"SCOPES":                  "tasks.read",
				"TOKEN_URL":               h.TokenURL(),
				"UPSTREAM_URL":            up.URL(),
			}
			s := startSidecar(t, env)
			got := s.getTasks(t)
			if got.ClientID != client.ID {
				t.Errorf("token client_id: got %q; want %q", got.ClientID, client.ID)
			}
			if want := []string{"tasks.read"}; !slices.Equal(got.Scopes, want) {
				t.Errorf("token scopes: got %q; want %q", got.Scopes, want)
			}
			if status := s.tokenz(t); status.LastOutcome != "success" {
				t.Errorf("/tokenz last_outcome: got %q; want success", status.LastOutcome)
			}
		})
	}
}

// writePrivateKey writes key as a PKCS #8 PEM file readable only by its
// owner and returns the path.
func writePrivateKey(t *testing.T, key crypto.Signer) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("encode private key: %v", err)
	}
	path := filepath.Join(t.TempDir(), "client-key.pem")
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatalf("write private key: %v", err)
	}
	return path
}

// waitForFailedFetch waits until /tokenz reports a failed token request and
// returns that status.
func waitForFailedFetch(t *testing.T, s *sidecar) tokenStatus {
	t.Helper()
	var status tokenStatus
	waitFor(t, 10*time.Second, "/tokenz reports a failed token request", func() bool {
		status = s.tokenz(t)
		return status.LastOutcome == "failure"
	})
	return status
}

// decodeError decodes the sidecar's JSON error body.
func decodeError(t *testing.T, body []byte) (code, description string) {
	t.Helper()
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("decode error body %q: %v", body, err)
	}
	return e.Error, e.Description
}
