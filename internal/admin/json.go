package admin

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// writeError answers an engine's refusal: 404 for a pool or host it does
// not know, 400 otherwise.
func writeError(w http.ResponseWriter, err error) {
	code := http.StatusBadRequest
	if errors.Is(err, affinity.ErrUnknownPool) || errors.Is(err, affinity.ErrUnknownHost) {
		code = http.StatusNotFound
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
