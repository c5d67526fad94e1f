package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
)

// reloader puts a changed configuration in force. It watches the content of
// the config file and of the keys file it names (content, not modification
// time, so a Kubernetes ConfigMap's symlink swap counts); a file that fails
// to load is logged once and the configuration in force stays.
type reloader struct {
	path   string
	engine *affinity.Engine
	log    *slog.Logger
	last   [sha256.Size]byte
	// onUpdate is told of every configuration put in force (may be nil).
	onUpdate func(*affinity.Snapshot)
	metrics  *metrics // counts reloads and refusals (may be nil)
	// certs are the gRPC listener's TLS files, checked at the same pace
	// (nil when TLS is off).
	certs *serverTLS
	// adminCerts are the admin listener's (nil when TLS is off).
	adminCerts *serverTLS
	// keysMode warns about a keys file others may read.
	keysMode keysFileMode
}

// keysFileMode warns, once per file and mode, when the keys file can be
// read by its group or by others: the signing keys forge every session.
type keysFileMode struct {
	log  *slog.Logger
	last string
}

func (k *keysFileMode) check(path string) {
	if path == "" {
		return
	}
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	mode := fi.Mode().Perm()
	seen := fmt.Sprintf("%s %o", path, mode)
	if seen == k.last {
		return
	}
	k.last = seen
	if mode&0o077 != 0 {
		k.log.Warn("the keys file can be read by others than its owner: anyone who reads it can forge sessions; chmod 600 it",
			"file", path, "mode", fmt.Sprintf("%04o", mode))
	}
}

// newReloader fingerprints the files as they are now. Create it before the
// first load: a change made between the two is then reloaded, never missed.
func newReloader(path string, log *slog.Logger) *reloader {
	r := &reloader{path: path, log: log}
	r.last, _ = r.fingerprint()
	return r
}

func (r *reloader) run(ctx context.Context, every time.Duration, hup <-chan os.Signal) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.reload(false)
			r.certs.check()
			r.adminCerts.check()
		case <-hup:
			r.reload(true)
			r.certs.check()
			r.adminCerts.check()
		}
	}
}

// reload loads the files if they changed, or always when forced.
func (r *reloader) reload(force bool) {
	fp, err := r.fingerprint()
	if err != nil {
		if fp != r.last {
			r.log.Error("config reload failed, the previous config stays in force", "error", err)
			if r.metrics != nil {
				r.metrics.reloadFails.Inc()
			}
			r.last = fp
		}
		return
	}
	if fp == r.last && !force {
		return
	}
	r.last = fp
	snap, err := affinity.LoadFile(r.path, os.Getenv, r.engine.Snapshot(), r.engine.Now())
	if err != nil {
		r.log.Error("config reload failed, the previous config stays in force", "error", err)
		if r.metrics != nil {
			r.metrics.reloadFails.Inc()
		}
		return
	}
	r.engine.Update(snap)
	r.keysMode.check(snap.KeysFile)
	if r.metrics != nil {
		r.metrics.reloads.Inc()
	}
	if r.onUpdate != nil {
		r.onUpdate(snap)
	}
	logSnapshot(r.log, "config reloaded", snap)
}

// fingerprint hashes the config file and the keys file it names. A file
// that cannot be read gives a fingerprint of the error, so the failure is
// reported once, not at every tick.
func (r *reloader) fingerprint() ([sha256.Size]byte, error) {
	h := sha256.New()
	data, err := os.ReadFile(r.path)
	if err != nil {
		h.Write([]byte(err.Error()))
		return [sha256.Size]byte(h.Sum(nil)), err
	}
	h.Write(data)
	if cfg, perr := affinity.ParseConfig(r.path, data); perr == nil {
		if kf := cfg.KeysFile(r.path); kf != "" {
			keys, kerr := os.ReadFile(kf)
			if kerr != nil {
				h.Write([]byte(kerr.Error()))
			}
			h.Write(keys)
		}
	}
	return [sha256.Size]byte(h.Sum(nil)), nil
}
