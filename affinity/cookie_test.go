package affinity

import (
	"testing"
	"time"
)

func TestSetCookie(t *testing.T) {
	tests := []struct {
		name string
		spec CookieSpec
		want string
	}{
		{"defaults", CookieSpec{Name: "affinity", Path: "/", Secure: true, HTTPOnly: true, SameSite: SameSiteLax, Lifetime: LifetimeSession},
			"affinity=TOK; Path=/; Secure; HttpOnly; SameSite=Lax"},
		{"permanent with domain", CookieSpec{Name: "s", Path: "/app", Domain: "example.com", SameSite: SameSiteStrict, Lifetime: LifetimePermanent},
			"s=TOK; Path=/app; Domain=example.com; Max-Age=3600; SameSite=Strict"},
		{"bare", CookieSpec{Name: "s"}, "s=TOK"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.spec.SetCookie("TOK", t0, t0.Add(time.Hour)); got != tt.want {
				t.Fatalf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestCookieValue(t *testing.T) {
	tests := []struct {
		header, name, want string
		found              bool
	}{
		{"affinity=abc", "affinity", "abc", true},
		{"a=1; affinity=abc; b=2", "affinity", "abc", true},
		{"a=1;affinity=abc", "affinity", "abc", true},
		{`affinity="abc"`, "affinity", "abc", true},
		{"affinity=first; affinity=second", "affinity", "first", true},
		{"xaffinity=abc", "affinity", "", false},
		{"affinity", "affinity", "", false},
		{";;;=;", "affinity", "", false},
		{"", "affinity", "", false},
		{"affinity=", "affinity", "", true},
		// As Envoy parses them (and jwt_authn reads the token so): no
		// trimming but of the spaces before a name.
		{"affinity =A; affinity=B", "affinity", "B", true},
		{"x=1;\taffinity=A; affinity=B", "affinity", "B", true},
		{"  affinity=A", "affinity", "A", true},
		{"affinity= A; affinity=B", "affinity", " A", true},
		{"affinity=A ; x=1", "affinity", "A ", true},
		{`affinity="A`, "affinity", `"A`, true},
		{`affinity=""`, "affinity", "", true},
		{"=A; affinity=B", "affinity", "B", true},
	}
	for _, tt := range tests {
		got, found := CookieValue(tt.header, tt.name)
		if got != tt.want || found != tt.found {
			t.Errorf("CookieValue(%q) = %q, %v; want %q, %v", tt.header, got, found, tt.want, tt.found)
		}
	}
	// Several Cookie headers: the first that has it, as Envoy reads them.
	if got, _ := RequestCookie([]string{"affinity=A", "affinity=B"}, "affinity"); got != "A" {
		t.Errorf("two Cookie headers: %q, want A", got)
	}
	if got, _ := RequestCookie([]string{"other=A", "affinity=B"}, "affinity"); got != "B" {
		t.Errorf("the later header when the first has none: %q", got)
	}
}

func FuzzCookieValue(f *testing.F) {
	f.Add("a=1; affinity=abc", "affinity")
	f.Add(`affinity="`, "affinity")
	f.Fuzz(func(t *testing.T, header, name string) {
		v, found := CookieValue(header, name)
		if !found && v != "" {
			t.Fatal("value without a cookie")
		}
	})
}
