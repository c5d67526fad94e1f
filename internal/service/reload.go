package service

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/envoy-affinity/envoy-affinity/affinity"
	"github.com/envoy-affinity/envoy-affinity/internal/tlsreload"
)

// reloadCounter counts reloads put in force and refused (the metrics).
type reloadCounter interface {
	ConfigReloaded()
	ConfigRefused()
}

// reloader puts a changed configuration in force. It watches the content of
// the config file and of the keys file it names (content, not modification
// time, so a Kubernetes ConfigMap's symlink swap counts); a file that fails
// to load is logged once and the configuration in force stays. The
// listeners' TLS files are reloaded at the same pace.
type reloader struct {
	path   string
	engine *affinity.Engine
	log    *slog.Logger
	last   [sha256.Size]byte
	// onUpdate is told of every configuration put in force (may be nil).
	onUpdate func(*affinity.Snapshot)
	counter  reloadCounter // may be nil
	// tls are the listeners' TLS (a nil one is off).
	tls []*tlsreload.Provider
	// keysMode warns about a keys file others may read.
	keysMode keysFileMode
}

// newReloader fingerprints the files as they are now. Create it before the
// first load: a change made between the two is then reloaded, never missed.
func newReloader(path string, log *slog.Logger) *reloader {
	r := &reloader{path: path, log: log, keysMode: keysFileMode{log: log}}
	r.last, _ = r.fingerprint()
	return r
}

// run reloads every interval, and at once on each hup, until ctx is done.
func (r *reloader) run(ctx context.Context, every time.Duration, hup <-chan os.Signal) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.reload(false)
		case <-hup:
			r.reload(true)
		}
		for _, p := range r.tls {
			p.Reload()
		}
	}
}

// reload loads the files if they changed, or always when forced.
func (r *reloader) reload(force bool) {
	fp, err := r.fingerprint()
	if err != nil {
		if fp != r.last {
			r.refused(err)
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
		r.refused(err)
		return
	}
	r.engine.Update(snap)
	r.keysMode.warn(snap.KeysFile)
	if r.counter != nil {
		r.counter.ConfigReloaded()
	}
	if r.onUpdate != nil {
		r.onUpdate(snap)
	}
	logSnapshot(r.log, "config reloaded", snap)
}

func (r *reloader) refused(err error) {
	r.log.Error("config reload failed, the previous config stays in force", "error", err)
	if r.counter != nil {
		r.counter.ConfigRefused()
	}
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

// keysFileMode warns, once per file and mode, when the keys file can be
// read by its group or by others: the signing keys forge every session.
type keysFileMode struct {
	log  *slog.Logger
	last string
}

// warn looks at the keys file's mode and warns if it is new and open.
func (k *keysFileMode) warn(path string) {
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
