// Package launch starts the real thing on loopback: Envoy from its official
// binary, the envoy-affinity server and the demo backends, each as its own
// process on free ports, with the Envoy YAML of the envoy/ folder, and talks
// to them (HTTP clients, Envoy's stats, the service's config). The demo
// (examples/demo), the end-to-end tests (e2e/) and the load benchmark
// (e2e/bench) all run the stack through it; it is not part of the product.
// It does not import testing: what only tests need is internal/launchtest.
package launch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/envoy-affinity/envoy-affinity/internal/envoyversion"
)

// EnvoyBinary returns the Envoy to run: $ENVOY, or the copy `make envoy`
// keeps in the user cache folder.
func EnvoyBinary() (string, error) {
	if p := os.Getenv("ENVOY"); p != "" {
		return p, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(cache, "envoy-affinity", "envoy-"+envoyversion.Tested, "envoy")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no Envoy at %s: run `make envoy` (or set ENVOY to an Envoy %s binary)", p, envoyversion.Tested)
	}
	return p, nil
}

// ModuleRoot is the folder of the project's go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the envoy-affinity module")
	}
	// A module of its own inside the project (examples/mcp): the project's
	// is the first go.mod above that names it.
	for dir := filepath.Dir(mod); ; {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modulePath(data) == projectModule {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the envoy-affinity module")
		}
		dir = parent
	}
}

// projectModule is the project's module path.
const projectModule = "github.com/envoy-affinity/envoy-affinity"

// modulePath is the path a go.mod's module line names.
func modulePath(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// Binaries are the project's programs, built once.
type Binaries struct {
	Server  string
	Backend string
	Envoy   string
}

// BuildTemp builds the binaries into a new temporary folder named after
// name; remove deletes the folder and all a run put into it.
func BuildTemp(name string) (dir string, bins Binaries, remove func(), err error) {
	if dir, err = os.MkdirTemp("", "envoy-affinity-"+name+"-"); err != nil {
		return "", Binaries{}, nil, err
	}
	remove = func() { os.RemoveAll(dir) }
	if bins, err = Build(dir); err != nil {
		remove()
		return "", Binaries{}, nil, err
	}
	return dir, bins, remove, nil
}

// Build compiles the server and the demo backend into dir and finds Envoy.
func Build(dir string) (Binaries, error) {
	envoy, err := EnvoyBinary()
	if err != nil {
		return Binaries{}, err
	}
	root, err := ModuleRoot()
	if err != nil {
		return Binaries{}, err
	}
	cmd := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "./cmd/envoy-affinity", "./examples/backend")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("go build: %v\n%s", err, out)
	}
	return Binaries{
		Server:  filepath.Join(dir, "envoy-affinity"),
		Backend: filepath.Join(dir, "backend"),
		Envoy:   envoy,
	}, nil
}

// FreePort returns a loopback TCP port that is free now and that no other
// caller in this process got. It is drawn below the kernel's ephemeral range
// (32768 and up on Linux), so the outgoing connections of a busy test cannot
// take it between this call and the server binding it.
func FreePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		p := 10000 + rand.IntN(22000)
		if portsTaken[p] {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		ln.Close()
		portsTaken[p] = true
		return p, nil
	}
	return 0, errors.New("no free port below the ephemeral range")
}

var (
	portsMu    sync.Mutex
	portsTaken = map[int]bool{}
)

var (
	portValueRE = regexp.MustCompile(`port_value: (\d+)`)
	loopbackRE  = regexp.MustCompile(`127\.0\.0\.1:(\d+)`)
)

// RenderEnvoy replaces each "port_value: N" of an Envoy YAML, and each
// "127.0.0.1:N" inside a string (a google_grpc target, a URI), by the port
// ports maps N to. A port_value the YAML has but the map lacks is an error,
// so a test never talks to a fixed default port by accident.
func RenderEnvoy(yaml []byte, ports map[int]int) ([]byte, error) {
	yaml = loopbackRE.ReplaceAllFunc(yaml, func(m []byte) []byte {
		n, _ := strconv.Atoi(string(loopbackRE.FindSubmatch(m)[1]))
		if p, ok := ports[n]; ok {
			return []byte("127.0.0.1:" + strconv.Itoa(p))
		}
		return m
	})
	var missing []string
	out := portValueRE.ReplaceAllFunc(yaml, func(m []byte) []byte {
		n, _ := strconv.Atoi(string(portValueRE.FindSubmatch(m)[1]))
		p, ok := ports[n]
		if !ok {
			missing = append(missing, strconv.Itoa(n))
			return m
		}
		return []byte("port_value: " + strconv.Itoa(p))
	})
	if len(missing) > 0 {
		return nil, fmt.Errorf("no port given for port_value %s", strings.Join(missing, ", "))
	}
	return out, nil
}

// Proc is a running child process whose output goes to a log file.
type Proc struct {
	Name string
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start runs bin with args in dir (the current folder when empty); stdout
// and stderr go to logPath.
func Start(name, dir, logPath, bin string, args ...string) (*Proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so a Ctrl-C meant for the demo reaches the
	// demo first and the demo stops its children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is how the process exited (nil: status 0); valid once Done is closed.
func (p *Proc) Err() error { return p.err }

// Stop sends SIGTERM and waits; after 5 s it kills.
func (p *Proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.Kill()
	}
}

// Kill ends the process at once (SIGKILL) and waits for it.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Tail returns the end of the process's log, for failure messages.
func (p *Proc) Tail() string {
	data, _ := os.ReadFile(p.Log)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// Eventually calls cond every 20 ms until it returns nil, the process dies,
// or the timeout passes; it returns cond's last error then.
func Eventually(ctx context.Context, timeout time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (after %v)", err, timeout)
		case <-t.C:
		}
	}
}

// waitReady polls url until it answers 200 with a body containing want.
func waitReady(ctx context.Context, p *Proc, url, want string) error {
	return waitReadyWith(ctx, &http.Client{Timeout: time.Second}, p, url, want)
}

// waitReadyWith is waitReady with a client of the caller's (TLS).
func waitReadyWith(ctx context.Context, client *http.Client, p *Proc, url, want string) error {
	err := Eventually(ctx, 20*time.Second, func() error {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %v", p.Name, p.err)
		default:
		}
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(want)) {
			return fmt.Errorf("%s: %d %s", url, resp.StatusCode, body)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s not ready: %w\n%s", p.Name, err, p.Tail())
	}
	return nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// WriteVariant writes the Envoy YAML at src to dst with the first old
// replaced by new: a test's or benchmark's variant of a shipped file. It
// fails when src has no old, so a variant never silently equals its source.
func WriteVariant(src, dst, old, new string) error {
	yaml, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if !strings.Contains(string(yaml), old) {
		return fmt.Errorf("%s has no %q to replace", src, old)
	}
	return os.WriteFile(dst, []byte(strings.Replace(string(yaml), old, new, 1)), 0o600)
}
