package hydratest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"testing"
)

func decodeJWKS(t *testing.T, data []byte) jsonWebKey {
	t.Helper()
	var set struct {
		Keys []jsonWebKey `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		t.Fatalf("decode JWKS %s: %v", data, err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("JWKS has %d keys, expected 1: %s", len(set.Keys), data)
	}
	return set.Keys[0]
}

func TestPublicJWKSEllipticCurves(t *testing.T) {
	tests := []struct {
		curve     elliptic.Curve
		name      string
		algorithm string
		size      int
	}{
		{elliptic.P256(), "P-256", "ES256", 32},
		{elliptic.P384(), "P-384", "ES384", 48},
		{elliptic.P521(), "P-521", "ES512", 66},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := ecdsa.GenerateKey(tt.curve, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			data, err := PublicJWKS("k1", &key.PublicKey)
			if err != nil {
				t.Fatalf("PublicJWKS: %v", err)
			}
			jwk := decodeJWKS(t, data)
			if jwk.KeyType != "EC" || jwk.Curve != tt.name || jwk.Algorithm != tt.algorithm || jwk.KeyID != "k1" || jwk.Use != "sig" {
				t.Errorf("JWK = %+v, expected kty EC, crv %s, alg %s, kid k1, use sig", jwk, tt.name, tt.algorithm)
			}
			for coordinate, encoded := range map[string]string{"x": jwk.X, "y": jwk.Y} {
				raw, err := base64.RawURLEncoding.DecodeString(encoded)
				if err != nil {
					t.Fatalf("decode %s: %v", coordinate, err)
				}
				if len(raw) != tt.size {
					t.Errorf("%s has %d bytes, expected %d", coordinate, len(raw), tt.size)
				}
			}
		})
	}
}

func TestPublicJWKSRSA(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	data, err := PublicJWKS("rsa-1", &key.PublicKey)
	if err != nil {
		t.Fatalf("PublicJWKS: %v", err)
	}
	jwk := decodeJWKS(t, data)
	if jwk.KeyType != "RSA" || jwk.Algorithm != "RS256" {
		t.Errorf("JWK = %+v, expected kty RSA, alg RS256", jwk)
	}
	// 65537, the exponent that rsa.GenerateKey uses.
	if jwk.Exponent != "AQAB" {
		t.Errorf("e = %q, expected AQAB", jwk.Exponent)
	}
	modulus, err := base64.RawURLEncoding.DecodeString(jwk.Modulus)
	if err != nil {
		t.Fatalf("decode n: %v", err)
	}
	if len(modulus) != 256 {
		t.Errorf("n has %d bytes, expected 256", len(modulus))
	}
}

func TestPublicJWKSUnsupportedKey(t *testing.T) {
	if _, err := PublicJWKS("k", "not a key"); err == nil {
		t.Error("PublicJWKS accepted a string as a public key")
	}
}
