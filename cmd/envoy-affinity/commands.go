package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/affinity/redisstore"
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
		fmt.Fprintf(stdout, "pool %s: mode %s, %d hosts, cookie %s\n", p.Name, p.Mode, p.Hosts.Len(), p.Cookie.Name)
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
