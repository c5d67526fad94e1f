package affinity

import (
	"strings"
	"testing"
)

func TestParseKeyring(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		wantIDs []string
		wantErr string
	}{
		{name: "one key", text: "k1:" + testSecret, wantIDs: []string{"k1"}},
		{name: "rotation order kept", text: "# new first\nk2:" + testSecret + "\n\nk1:" + testSecret + "\n", wantIDs: []string{"k2", "k1"}},
		{name: "comma separated (environment)", text: "k2:" + testSecret + ",k1:" + testSecret, wantIDs: []string{"k2", "k1"}},
		{name: "padded standard base64", text: "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", wantIDs: []string{"k1"}},
		{name: "empty", text: "\n# nothing\n", wantErr: "no keys"},
		{name: "short secret", text: "k1:c2hvcnQ", wantErr: "line 1: key \"k1\": secret has 5 bytes"},
		{name: "not base64", text: "k1:!!!!", wantErr: "not base64"},
		{name: "no id", text: ":" + testSecret, wantErr: "id:base64-secret"},
		{name: "bad id", text: "k 1:" + testSecret, wantErr: "only letters"},
		{name: "duplicate", text: "k1:" + testSecret + "\nk1:" + testSecret, wantErr: "line 2: key id \"k1\" appears twice"},
		{name: "all problems at once", text: "a:x\nb:y", wantErr: "line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ring, err := ParseKeyring(tt.text)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(ring.IDs(), ","); got != strings.Join(tt.wantIDs, ",") {
				t.Fatalf("ids = %s, want %v", got, tt.wantIDs)
			}
			if ring.Signer().ID != tt.wantIDs[0] || len(ring.Signer().Secret) != 32 {
				t.Fatalf("signer = %q (%d bytes)", ring.Signer().ID, len(ring.Signer().Secret))
			}
		})
	}
}
