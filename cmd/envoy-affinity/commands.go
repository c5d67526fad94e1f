package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/affinity/redisstore"
	"github.com/envoy-affinity/envoy-affinity/envoy/envoyconfig"
)

// subcommand parses a subcommand's flags, defined by define. A request for
// help prints the flags and reports help = true (not an error).
func subcommand(name string, args []string, stderr io.Writer, define func(*flag.FlagSet)) (help bool, err error) {
	fs := flag.NewFlagSet("envoy-affinity "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	define(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, err
	}
	return false, nil
}

// loadFor loads the configuration a subcommand's -config names.
func loadFor(cmd, config string) (*affinity.Snapshot, error) {
	if config == "" {
		return nil, fmt.Errorf("%s: -config is required", cmd)
	}
	return affinity.LoadFile(config, os.Getenv, nil, time.Now())
}

func check(args []string, stdout, stderr io.Writer) error {
	var config string
	if help, err := subcommand("check", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&config, "config", "", "configuration file to validate")
	}); help || err != nil {
		return err
	}
	snap, err := loadFor("check", config)
	if err != nil {
		return err
	}
	for _, p := range snap.Pools {
		hosts := "hosts"
		if p.Hosts.Len() == 1 {
			hosts = "host"
		}
		fmt.Fprintf(stdout, "pool %s: mode %s, %d %s\n", p.Name, p.Mode, p.Hosts.Len(), hosts)
		for _, c := range p.Costs() {
			fmt.Fprintf(stdout, "  %s: %s\n", sourceName(c), costWords(c, p.RefreshInterval))
		}
		if note := envoyconfig.ModeNote(p); note != "" {
			fmt.Fprintf(stdout, "  note: %s\n", note)
		}
	}
	if r := snap.Redis; r != nil {
		// Reads the credential and TLS files; connects to nothing.
		if _, err := redisstore.New(*r, affinity.NewMemoryStore(1, time.Second), time.Second, redisstore.Options{}); err != nil {
			return fmt.Errorf("%s: %w", config, err)
		}
		fmt.Fprintf(stdout, "store: redis %s %s, key prefix %q\n", r.Mode, strings.Join(r.Addresses, ","), r.KeyPrefix)
	}
	fmt.Fprintf(stdout, "%s: ok\n", config)
	return nil
}

// sourceName names a key source as the configuration does.
func sourceName(c affinity.SourceCost) string {
	switch c.Type {
	case affinity.SourceCookie:
		return "cookie " + c.Name
	case affinity.SourceQuery:
		return "query parameter " + c.Name
	case affinity.SourceClientAddress:
		return "client address"
	case affinity.SourceAppCookie:
		return "application cookie " + c.Name + " (learned)"
	case affinity.SourceUpstreamHeader:
		if c.Envelope {
			return "upstream header " + c.Name + " (signed envelope)"
		}
		return "upstream header " + c.Name + " (learned)"
	}
	return string(c.Type) + " " + c.Name
}

// costWords says what a source's requests cost, in ext_proc messages.
func costWords(c affinity.SourceCost, refresh time.Duration) string {
	var b strings.Builder
	switch {
	case c.EnvoyAlone:
		fmt.Fprintf(&b, "new session %s, established sessions 0 (Envoy routes them alone)", messages(c.New))
	case c.New == c.Known && c.Known == 2:
		fmt.Fprintf(&b, "the service decides every request (%s: its response too, for a key to learn or wrap)", messages(c.New))
	case c.New == c.Known:
		fmt.Fprintf(&b, "the service decides every request (%s)", messages(c.New))
	default:
		fmt.Fprintf(&b, "the service decides every request (new session %s, established %d)", messages(c.New), c.Known)
	}
	if c.Refresh > 0 {
		fmt.Fprintf(&b, ", %d at each refresh (every %s)", c.Refresh, refresh)
	}
	return b.String()
}

// messages is n ext_proc messages, in words.
func messages(n int) string {
	if n == 1 {
		return "1 ext_proc message"
	}
	return strconv.Itoa(n) + " ext_proc messages"
}

func keygen(args []string, stdout, stderr io.Writer) error {
	var id, alg string
	if help, err := subcommand("keygen", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&id, "id", "", "key id (default: k followed by today's date)")
		fs.StringVar(&alg, "alg", "ed25519", "ed25519 (Envoy needs only the public key) or hs256 (a shared secret)")
	}); help || err != nil {
		return err
	}
	if id == "" {
		id = "k" + time.Now().UTC().Format("20060102")
	}
	secret := make([]byte, 32) // an Ed25519 seed, or an HS256 key of the hash size
	_, _ = rand.Read(secret)
	line := id + ":" + strings.ToLower(alg) + ":" + base64.RawURLEncoding.EncodeToString(secret)
	if _, err := affinity.ParseKeyring(line); err != nil {
		return err
	}
	_, err := fmt.Fprintln(stdout, line)
	return err
}

// jwks writes the key set Envoy's jwt_authn verifies session tokens with.
func jwks(args []string, stdout, stderr io.Writer) error {
	var config, out string
	var withSecrets bool
	if help, err := subcommand("jwks", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&config, "config", "", "configuration file whose keys to publish")
		fs.BoolVar(&withSecrets, "with-secrets", false, "include HS256 secrets (for a local_jwks file only Envoy can read; never serve them)")
		fs.StringVar(&out, "out", "", "write to this file (mode 0600) instead of standard output")
	}); help || err != nil {
		return err
	}
	snap, err := loadFor("jwks", config)
	if err != nil {
		return err
	}
	set := append(snap.Codec.Keys().JWKS(withSecrets), '\n')
	if out == "" {
		_, err = stdout.Write(set)
		return err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, set, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}
