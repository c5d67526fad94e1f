package main

import (
	"bytes"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"
)

// bearerToken guards the admin API with a token read from a file. The file
// is read again when it changes, so the token can be rotated in place; a
// file that becomes unreadable or empty keeps the token in force. A nil
// *bearerToken guards nothing.
type bearerToken struct {
	path string
	log  *slog.Logger

	mu    sync.Mutex
	mod   time.Time
	size  int64
	token []byte
	// reported is the last problem logged, so that it is logged once.
	reported string
}

// newBearerToken reads the token file; an empty path turns the guard off.
func newBearerToken(path string, log *slog.Logger) (*bearerToken, error) {
	if path == "" {
		return nil, nil
	}
	b := &bearerToken{path: path, log: log}
	if err := b.load(); err != nil {
		return nil, err
	}
	return b, nil
}

// load reads the file if it changed since it was last read.
func (b *bearerToken) load() error {
	fi, err := os.Stat(b.path)
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	if b.token != nil && fi.ModTime().Equal(b.mod) && fi.Size() == b.size {
		return nil
	}
	data, err := os.ReadFile(b.path)
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	token := bytes.TrimSpace(data)
	if len(token) == 0 {
		return fmt.Errorf("admin token: %s is empty", b.path)
	}
	b.mod, b.size, b.token = fi.ModTime(), fi.Size(), token
	return nil
}

// current is the token in force.
func (b *bearerToken) current() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	before := b.mod
	switch err := b.load(); {
	case err != nil:
		// Say it once per problem, not on every request.
		if err.Error() != b.reported {
			b.reported = err.Error()
			b.log.Error("admin token file unusable; the previous token stays", "error", err)
		}
	case !b.mod.Equal(before):
		b.reported = ""
		b.log.Info("admin token reloaded", "file", b.path)
	}
	return b.token
}

// require wraps next so that it answers only requests carrying the token.
func (b *bearerToken) require(next http.Handler) http.Handler {
	if b == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := bytes.CutPrefix([]byte(r.Header.Get("Authorization")), []byte("Bearer "))
		if !ok || subtle.ConstantTimeCompare(got, b.current()) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="envoy-affinity admin"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
