package admin

import (
	"errors"
	"net/http"

	"github.com/envoy-affinity/envoy-affinity/envoy/doctor"
	"github.com/envoy-affinity/envoy-affinity/internal/envoydoctor"
)

// doctor answers GET /debug/doctor: Envoy's configuration examined now, as
// JSON.
func (a *API) doctor(w http.ResponseWriter, r *http.Request) {
	report, err := a.d.Doctor.Examine(r.Context())
	switch {
	case errors.Is(err, envoydoctor.ErrNoEnvoy):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
	case err != nil:
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": "reading Envoy's configuration: " + err.Error()})
	default:
		if report.Problems == nil {
			report.Problems = []doctor.Problem{}
		}
		writeJSON(w, http.StatusOK, report)
	}
}
