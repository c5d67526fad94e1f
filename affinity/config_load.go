package affinity

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// LoadFile reads, validates and builds the configuration at path, with the
// keys it names. getenv reads environment variables (os.Getenv in the
// binary). prev is the configuration in force (nil on the first load): keys
// it already had keep their signing time, new ones wait keys.sign_delay.
func LoadFile(path string, getenv func(string) string, prev *Snapshot, now time.Time) (*Snapshot, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, err := ParseConfig(path, data)
	if err != nil {
		return nil, err
	}
	keys, err := cfg.loadKeys(path, getenv)
	if err != nil {
		return nil, err
	}
	var prevKeys *Keyring
	if prev != nil {
		prevKeys = prev.Codec.Keys()
	}
	keys.Carry(prevKeys, now, *cfg.Keys.SignDelay)
	cfg.resolveRedisFiles(path)
	snap := cfg.Build(keys)
	snap.KeysFile = cfg.KeysFile(path)
	return snap, nil
}

// resolveRedisFiles makes the Redis block's file paths relative to the
// configuration file's folder absolute.
func (c *Config) resolveRedisFiles(configPath string) {
	r := c.Store.Redis
	if r == nil {
		return
	}
	dir := filepath.Dir(configPath)
	resolve := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	resolve(&r.UsernameFile)
	resolve(&r.PasswordFile)
	if t := r.TLS; t != nil {
		resolve(&t.CAFile)
		resolve(&t.CertFile)
		resolve(&t.KeyFile)
	}
}

// KeysFile is the path of the keys file, resolved against the config file's
// folder; empty when the keys come from the environment.
func (c *Config) KeysFile(configPath string) string {
	if c.Keys.File == "" || filepath.IsAbs(c.Keys.File) {
		return c.Keys.File
	}
	return filepath.Join(filepath.Dir(configPath), c.Keys.File)
}

func (c *Config) loadKeys(configPath string, getenv func(string) string) (*Keyring, error) {
	if c.Keys.Env != "" {
		text := getenv(c.Keys.Env)
		if text == "" {
			return nil, fmt.Errorf("%s: keys.env: environment variable %s is empty or unset", configPath, c.Keys.Env)
		}
		ring, err := ParseKeyring(text)
		if err != nil {
			return nil, fmt.Errorf("environment variable %s: %w", c.Keys.Env, err)
		}
		return ring, nil
	}
	file := c.KeysFile(configPath)
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: keys.file: %w", configPath, err)
	}
	ring, err := ParseKeyring(string(data))
	if err != nil {
		return nil, prefixLines(file, err)
	}
	return ring, nil
}

// prefixLines puts the file name before each joined error.
func prefixLines(file string, err error) error {
	var errs []error
	for _, line := range strings.Split(err.Error(), "\n") {
		errs = append(errs, fmt.Errorf("%s: %s", file, line))
	}
	return errors.Join(errs...)
}
