package affinity

import (
	"strings"
	"testing"
	"time"
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
		{name: "ed25519 and explicit hs256", text: "e1:ed25519:" + edSeed + "\nh1:HS256:" + testSecret, wantIDs: []string{"e1", "h1"}},
		{name: "ed25519 seed of the wrong size", text: "e1:ed25519:c2hvcnQ", wantErr: "Ed25519 seed has 32 bytes"},
		{name: "unknown algorithm", text: "e1:rsa:" + testSecret, wantErr: `algorithm "rsa"`},
		{name: "too many fields", text: "a:b:c:d", wantErr: "id:ed25519:base64-seed"},
		{name: "padded standard base64", text: "k1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", wantIDs: []string{"k1"}},
		{name: "empty", text: "\n# nothing\n", wantErr: "no keys"},
		{name: "short secret", text: "k1:c2hvcnQ", wantErr: "line 1: key \"k1\": secret has 5 bytes"},
		{name: "not base64", text: "k1:!!!!", wantErr: "not base64"},
		{name: "no id", text: ":" + testSecret, wantErr: "needs an id"},
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
			if ring.Signer(t0).ID != tt.wantIDs[0] {
				t.Fatalf("signer = %q", ring.Signer(t0).ID)
			}
		})
	}
}

func TestKeyringSignDelay(t *testing.T) {
	first := testKeyring(t, "k1:"+testSecret)
	first.Carry(nil, t0, time.Minute)
	if got := first.Signer(t0).ID; got != "k1" {
		t.Fatalf("keys present at start sign at once; signer %s", got)
	}
	// k2 arrives in a reload, put first: published now, signing a minute later.
	rotated := testKeyring(t, "k2:ed25519:"+edSeed, "k1:"+testSecret)
	rotated.Carry(first, t0.Add(time.Hour), time.Minute)
	tests := []struct {
		at   time.Duration
		want string
	}{{time.Hour, "k1"}, {time.Hour + 59*time.Second, "k1"}, {time.Hour + time.Minute, "k2"}}
	for _, tt := range tests {
		if got := rotated.Signer(t0.Add(tt.at)).ID; got != tt.want {
			t.Errorf("at +%v signer %s, want %s", tt.at, got, tt.want)
		}
	}
	// A later reload keeps k2's time; a changed secret under the same id is a new key.
	again := testKeyring(t, "k2:ed25519:"+edSeed, "k1:"+testSecret)
	again.Carry(rotated, t0.Add(2*time.Hour), time.Hour)
	if !again.SignFrom("k2").Equal(t0.Add(time.Hour + time.Minute)) {
		t.Fatalf("k2 sign time not carried: %v", again.SignFrom("k2"))
	}
	changed := testKeyring(t, "k2:ed25519:"+testSecret, "k1:"+testSecret)
	changed.Carry(again, t0.Add(3*time.Hour), time.Minute)
	if got := changed.Signer(t0.Add(3 * time.Hour)).ID; got != "k1" {
		t.Fatalf("a replaced k2 signed at once")
	}
}

// TestKeyringReplacedSigner: a reload whose keys file holds only a new key
// keeps the key that signed until the new one's delay has passed (still
// published), and the next reload drops it.
func TestKeyringReplacedSigner(t *testing.T) {
	first := testKeyring(t, "k1:"+testSecret)
	first.Carry(nil, t0, time.Minute)
	replaced := testKeyring(t, "k2:ed25519:"+edSeed)
	replaced.Carry(first, t0.Add(time.Hour), time.Minute)
	tests := []struct {
		at   time.Duration
		want string
	}{{time.Hour, "k1"}, {time.Hour + 59*time.Second, "k1"}, {time.Hour + time.Minute, "k2"}}
	for _, tt := range tests {
		if got := replaced.Signer(t0.Add(tt.at)).ID; got != tt.want {
			t.Errorf("at +%v signer %s, want %s", tt.at, got, tt.want)
		}
	}
	if _, ok := replaced.Lookup("k1"); !ok {
		t.Fatal("the replaced signer no longer verifies its tokens")
	}
	later := testKeyring(t, "k2:ed25519:"+edSeed)
	later.Carry(replaced, t0.Add(2*time.Hour), time.Minute)
	if got := strings.Join(later.IDs(), ","); got != "k2" {
		t.Fatalf("after the delay a reload keeps %s", got)
	}
	// A zero delay (a leaked key retired at once) signs with the new key.
	now := testKeyring(t, "k2:ed25519:"+edSeed)
	now.Carry(first, t0.Add(time.Hour), 0)
	if got := now.Signer(t0.Add(time.Hour)).ID; got != "k2" || len(now.IDs()) != 1 {
		t.Fatalf("with no delay: signer %s, keys %v", got, now.IDs())
	}
}

func TestJWKS(t *testing.T) {
	ring := testKeyring(t, "e1:ed25519:"+edSeed, "h1:"+testSecret)
	pub := string(ring.JWKS(false))
	if !strings.Contains(pub, `"kty":"OKP","crv":"Ed25519","alg":"EdDSA","kid":"e1","use":"sig","x":"`) || strings.Contains(pub, "h1") {
		t.Fatalf("public JWKS %s", pub)
	}
	withSecrets := string(ring.JWKS(true))
	if !strings.Contains(withSecrets, `{"kty":"oct","alg":"HS256","kid":"h1","use":"sig","k":"`+testSecret+`"}`) {
		t.Fatalf("JWKS with secrets %s", withSecrets)
	}
	if got := string(testKeyring(t).JWKS(false)); got != `{"keys":[]}` {
		t.Fatalf("HS256-only public JWKS %s", got)
	}
}
