package hydratest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
)

// jsonWebKey is a public JSON Web Key (RFC 7517, RFC 7518 section 6).
type jsonWebKey struct {
	KeyType   string `json:"kty"`
	KeyID     string `json:"kid,omitempty"`
	Use       string `json:"use"`
	Algorithm string `json:"alg"`
	Curve     string `json:"crv,omitempty"`
	X         string `json:"x,omitempty"`
	Y         string `json:"y,omitempty"`
	Modulus   string `json:"n,omitempty"`
	Exponent  string `json:"e,omitempty"`
}

// PublicJWKS returns a JSON Web Key Set with the one public key, for
// ClientSpec.JWKS. It supports *ecdsa.PublicKey on P-256, P-384 and P-521
// (algorithms ES256, ES384, ES512) and *rsa.PublicKey (RS256). The key's
// "kid" is keyID, which a client assertion names in its JWS header.
func PublicJWKS(keyID string, key crypto.PublicKey) (json.RawMessage, error) {
	jwk := jsonWebKey{KeyID: keyID, Use: "sig"}
	switch key := key.(type) {
	case *ecdsa.PublicKey:
		var size int
		switch key.Curve {
		case elliptic.P256():
			jwk.Curve, jwk.Algorithm, size = "P-256", "ES256", 32
		case elliptic.P384():
			jwk.Curve, jwk.Algorithm, size = "P-384", "ES384", 48
		case elliptic.P521():
			jwk.Curve, jwk.Algorithm, size = "P-521", "ES512", 66
		default:
			return nil, fmt.Errorf("unsupported elliptic curve %s", key.Curve.Params().Name)
		}
		// ECDH returns the uncompressed point 0x04 || X || Y with fixed-size
		// coordinates, which RFC 7518 section 6.2.1 requires.
		ecdhKey, err := key.ECDH()
		if err != nil {
			return nil, fmt.Errorf("invalid ECDSA public key: %w", err)
		}
		point := ecdhKey.Bytes()
		jwk.KeyType = "EC"
		jwk.X = base64.RawURLEncoding.EncodeToString(point[1 : 1+size])
		jwk.Y = base64.RawURLEncoding.EncodeToString(point[1+size:])
	case *rsa.PublicKey:
		jwk.KeyType = "RSA"
		jwk.Algorithm = "RS256"
		jwk.Modulus = base64.RawURLEncoding.EncodeToString(key.N.Bytes())
		jwk.Exponent = base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes())
	default:
		return nil, fmt.Errorf("unsupported public key type %T", key)
	}
	return json.Marshal(map[string][]jsonWebKey{"keys": {jwk}})
}
