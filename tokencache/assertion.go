package tokencache

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// assertionLifetime is how long a client assertion is valid. It only has
// to outlive one token request.
const assertionLifetime = time.Minute

// TODO: Microsoft Entra ID expects an x5t#S256 certificate thumbprint in the
// assertion header for certificate credentials; only kid is sent here.

// KeySigner signs client assertions (RFC 7523 section 2.2) with a private
// key: RS256 for RSA keys, ES256, ES384 or ES512 for EC keys by curve.
type KeySigner struct {
	clientID string
	signer   jose.Signer
	// Algorithm is the JWS algorithm used.
	Algorithm jose.SignatureAlgorithm
}

// NewAssertionSigner reads a PEM private key (PKCS #8, PKCS #1 or SEC 1)
// from path. keyID, if set, goes in the assertion's kid header.
func NewAssertionSigner(path, clientID, keyID string) (*KeySigner, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	key, err := parsePrivateKey(data)
	if err != nil {
		return nil, err
	}
	alg, err := algorithmFor(key)
	if err != nil {
		return nil, err
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if keyID != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), keyID)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		return nil, fmt.Errorf("create signer: %w", err)
	}
	return &KeySigner{clientID: clientID, signer: signer, Algorithm: alg}, nil
}

// Sign returns a new signed assertion for the audience, with a fresh jti.
func (s *KeySigner) Sign(audience string) (string, error) {
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	now := time.Now()
	claims := jwt.Claims{
		Issuer:    s.clientID,
		Subject:   s.clientID,
		Audience:  jwt.Audience{audience},
		ID:        hex.EncodeToString(jti),
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now.Add(-5 * time.Second)),
		Expiry:    jwt.NewNumericDate(now.Add(assertionLifetime)),
	}
	return jwt.Signed(s.signer).Claims(claims).Serialize()
}

func parsePrivateKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found; the file must hold a PEM private key")
	}
	if key, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if s, ok := key.(crypto.Signer); ok {
			return s, nil
		}
		return nil, fmt.Errorf("PKCS #8 key of type %T cannot sign", key)
	}
	if key, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return key, nil
	}
	if key, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return key, nil
	}
	return nil, fmt.Errorf("PEM block %q is not an RSA or EC private key in PKCS #8, PKCS #1 or SEC 1 form", block.Type)
}

func algorithmFor(key crypto.Signer) (jose.SignatureAlgorithm, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return "", fmt.Errorf("RSA key has %d bits; use at least 2048", k.N.BitLen())
		}
		return jose.RS256, nil
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return jose.ES256, nil
		case elliptic.P384():
			return jose.ES384, nil
		case elliptic.P521():
			return jose.ES512, nil
		}
		return "", fmt.Errorf("EC curve %s is not supported; use P-256, P-384 or P-521", k.Curve.Params().Name)
	}
	return "", fmt.Errorf("key type %T is not supported; use RSA or EC", key)
}
