package admin

import (
	"bytes"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
)

// Token guards the admin API with a bearer token read from a file. The
// file is read again when it changes, so the token can be rotated in place;
// a file that becomes unreadable or empty keeps the token in force. A nil
// *Token guards nothing.
type Token struct {
	path string
	log  *slog.Logger

	mu    sync.Mutex
	mod   time.Time
	size  int64
	token []byte
	// reported is the last problem logged, so that it is logged once.
	reported string
}

// NewToken reads the token file; an empty path turns the guard off (nil).
func NewToken(path string, log *slog.Logger) (*Token, error) {
	if path == "" {
		return nil, nil
	}
	t := &Token{path: path, log: log}
	if err := t.load(); err != nil {
		return nil, err
	}
	return t, nil
}

// load reads the file if it changed since it was last read.
func (t *Token) load() error {
	fi, err := os.Stat(t.path)
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	if t.token != nil && fi.ModTime().Equal(t.mod) && fi.Size() == t.size {
		return nil
	}
	data, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	token := bytes.TrimSpace(data)
	if len(token) == 0 {
		return fmt.Errorf("admin token: %s is empty", t.path)
	}
	t.mod, t.size, t.token = fi.ModTime(), fi.Size(), token
	return nil
}

// current is the token in force.
func (t *Token) current() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	before := t.mod
	switch err := t.load(); {
	case err != nil:
		// Say it once per problem, not on every request.
		if err.Error() != t.reported {
			t.reported = err.Error()
			t.log.Error("admin token file unusable; the previous token stays", "error", err)
		}
	case !t.mod.Equal(before):
		t.reported = ""
		t.log.Info("admin token reloaded", "file", t.path)
	}
	return t.token
}

// require wraps next so that it answers only requests carrying the token.
func (t *Token) require(next http.Handler) http.Handler {
	if t == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := bytes.CutPrefix([]byte(r.Header.Get("Authorization")), []byte("Bearer "))
		if !ok || subtle.ConstantTimeCompare(got, t.current()) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="envoy-affinity admin"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// stateChange guards an endpoint that changes state (drain, undrain)
// against a web page in the operator's browser: cross-origin requests are
// refused (Go's CrossOriginProtection: Sec-Fetch-Site, or Origin against
// Host), and without an admin token the Host must be an IP address or
// localhost, which a page on another name reaching the API through DNS
// rebinding cannot send.
func stateChange(token *Token, next http.Handler) http.Handler {
	crossOrigin := http.NewCrossOriginProtection()
	return crossOrigin.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token == nil && !directHost(r.Host) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": fmt.Sprintf(
				"Host %q: without -admin-token-file, state changes are taken only for an IP address or localhost", r.Host)})
			return
		}
		next.ServeHTTP(w, r)
	}))
}

// directHost reports whether host (with or without a port) is an IP
// literal or localhost.
func directHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return strings.EqualFold(host, "localhost")
}
