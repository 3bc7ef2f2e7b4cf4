package tokencache

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// SecretFile reads the client secret from a file, such as a mounted
// Kubernetes Secret, dropping trailing CR and LF characters. It is safe for
// concurrent use.
type SecretFile struct {
	path string
	log  *zap.Logger

	// mu guards value and digest.
	mu     sync.Mutex
	value  string
	digest [sha256.Size]byte
}

// NewSecretFile reads the secret at path. It fails when the file cannot be
// read or holds an empty secret.
func NewSecretFile(path string, log *zap.Logger) (*SecretFile, error) {
	if log == nil {
		log = zap.NewNop()
	}
	s := &SecretFile{path: path, log: log}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Secret re-reads the file and returns the secret. If the file has become
// unreadable or empty, it logs a warning and returns the last secret read.
func (s *SecretFile) Secret() (string, error) {
	if _, err := s.Reload(); err != nil {
		s.log.Warn("cannot re-read the client secret file; using the secret read before",
			zap.String("path", s.path), zap.Error(err))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.value, nil
}

// Reload reads the file and reports whether the secret changed. On error it
// keeps the previous secret.
func (s *SecretFile) Reload() (changed bool, err error) {
	data, err := os.ReadFile(s.path)
	if err != nil {
		return false, fmt.Errorf("read client secret file: %w", err)
	}
	value := strings.TrimRight(string(data), "\r\n")
	if value == "" {
		return false, fmt.Errorf("client secret file %s is empty", s.path)
	}
	digest := sha256.Sum256([]byte(value))
	s.mu.Lock()
	defer s.mu.Unlock()
	changed = s.value != "" && digest != s.digest
	s.value, s.digest = value, digest
	return changed, nil
}

// Watch re-reads the file every interval until ctx ends and calls onChange
// after the secret changes. Polling, rather than inotify, also detects the
// symlink swap by which Kubernetes updates a Secret volume.
func (s *SecretFile) Watch(ctx context.Context, interval time.Duration, onChange func()) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	var lastErr error
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		changed, err := s.Reload()
		if err != nil {
			if lastErr == nil || err.Error() != lastErr.Error() {
				s.log.Warn("cannot re-read the client secret file; using the secret read before",
					zap.String("path", s.path), zap.Error(err))
			}
			lastErr = err
			continue
		}
		lastErr = nil
		if changed {
			s.log.Info("client secret file changed", zap.String("path", s.path))
			onChange()
		}
	}
}
