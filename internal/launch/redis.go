package launch

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Redis is a redis-server (Debian's package) on a loopback port, keeping
// nothing on disk.
type Redis struct {
	Port int
	dir  string
	opts RedisOptions
	proc *Proc
}

// RedisOptions shape a redis-server beyond the defaults.
type RedisOptions struct {
	// Args are more redis-server arguments ("--user", "alice on >pw ~* +@all").
	Args []string
	// CLI are the redis-cli arguments that reach it ("--user", "alice",
	// "--pass", "pw"; "--tls", "--cacert", "ca.pem").
	CLI []string
	// TLS: the port speaks only TLS (the certificate files are in Args).
	TLS bool
	// Sentinel is a Sentinel's configuration text: the server runs as a
	// Sentinel of it.
	Sentinel string
}

// Addr is the server's host:port.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.Port) }

// redisBinary finds redis-server and redis-cli.
func redisBinary(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found: apt-get install redis-server (make test installs it)", name)
	}
	return p, nil
}

// StartRedis starts a redis-server on a free loopback port, logging into
// dir; extra are more redis-server arguments.
func StartRedis(ctx context.Context, dir string, extra ...string) (*Redis, error) {
	return StartRedisWith(ctx, dir, RedisOptions{Args: extra})
}

// StartRedisWith starts a redis-server shaped by o on a free loopback port.
func StartRedisWith(ctx context.Context, dir string, o RedisOptions) (*Redis, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	r := &Redis{Port: port, dir: dir, opts: o}
	return r, r.Start(ctx)
}

// Start (re)starts the server at its port.
func (r *Redis) Start(ctx context.Context) error {
	bin, err := redisBinary("redis-server")
	if err != nil {
		return err
	}
	name := "redis-" + strconv.Itoa(r.Port)
	var args []string
	if r.opts.Sentinel != "" {
		conf := filepath.Join(r.dir, name+".conf")
		if err := os.WriteFile(conf, []byte(r.opts.Sentinel), 0o600); err != nil {
			return err
		}
		args = []string{conf, "--sentinel"}
	}
	if r.opts.TLS {
		args = append(args, "--port", "0", "--tls-port", strconv.Itoa(r.Port))
	} else {
		args = append(args, "--port", strconv.Itoa(r.Port))
	}
	args = append(args, "--bind", "127.0.0.1", "--dir", r.dir, "--protected-mode", "no")
	if r.opts.Sentinel == "" {
		args = append(args, "--save", "", "--appendonly", "no")
	}
	args = append(args, r.opts.Args...)
	p, err := Start(name, r.dir, filepath.Join(r.dir, name+".log"), bin, args...)
	if err != nil {
		return err
	}
	r.proc = p
	err = Eventually(ctx, 10*time.Second, func() error {
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited: %v\n%s", name, p.Err(), p.Tail())
		default:
		}
		out, err := r.CLI("PING")
		if err != nil || out != "PONG" {
			return fmt.Errorf("%s not answering: %q %v", name, out, err)
		}
		return nil
	})
	if err != nil {
		p.Kill()
	}
	return err
}

// CLI runs redis-cli against the server and returns its output, trimmed.
func (r *Redis) CLI(args ...string) (string, error) {
	bin, err := redisBinary("redis-cli")
	if err != nil {
		return "", err
	}
	all := append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(r.Port), "--no-auth-warning"}, r.opts.CLI...)
	out, err := exec.Command(bin, append(all, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Pause stops the server's process (SIGSTOP): it holds its connections and
// answers nothing, as an overloaded or swapped-out server would.
func (r *Redis) Pause() error { return r.proc.Signal(syscall.SIGSTOP) }

// Resume continues a paused server.
func (r *Redis) Resume() error { return r.proc.Signal(syscall.SIGCONT) }

// Kill ends the server at once, as a crash would.
func (r *Redis) Kill() { r.proc.Kill() }

// Stop ends the server.
func (r *Redis) Stop() { r.proc.Stop() }

// Info returns one field of INFO's section (e.g. "commandstats",
// "cmdstat_get"), or "" when absent.
func (r *Redis) Info(section, field string) string {
	out, _ := r.CLI("INFO", section)
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == field {
			return v
		}
	}
	return ""
}

// RedisCluster is a Redis Cluster of masters on loopback ports.
type RedisCluster struct {
	Nodes []*Redis
}

// Addrs are the nodes' host:port.
func (c *RedisCluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// Stop ends every node.
func (c *RedisCluster) Stop() {
	for _, n := range c.Nodes {
		n.Stop()
	}
}

// StartRedisCluster starts cluster-enabled servers and joins them with
// redis-cli --cluster create: masters, each with replicas replicas; extra
// are more redis-server arguments for every node.
func StartRedisCluster(ctx context.Context, dir string, masters, replicas int, extra ...string) (*RedisCluster, error) {
	c := &RedisCluster{}
	for i := 0; i < masters*(1+replicas); i++ {
		port, err := FreePort()
		if err != nil {
			c.Stop()
			return nil, err
		}
		// The cluster bus gets a free port too (by default port+10000,
		// which nobody reserved).
		bus, err := FreePort()
		if err != nil {
			c.Stop()
			return nil, err
		}
		n := &Redis{Port: port, dir: dir, opts: RedisOptions{Args: append([]string{"--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(bus),
			"--cluster-config-file", "nodes-" + strconv.Itoa(port) + ".conf", "--cluster-node-timeout", "1000"}, extra...)}}
		if err := n.Start(ctx); err != nil {
			c.Stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := c.Nodes[0].CLI(args...); err != nil {
		c.Stop()
		return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	err := Eventually(ctx, 20*time.Second, func() error {
		for _, n := range c.Nodes {
			out, _ := n.CLI("CLUSTER", "INFO")
			if !strings.Contains(out, "cluster_state:ok") {
				return fmt.Errorf("%s: cluster not ready:\n%s", n.Addr(), out)
			}
			// Every node knows every replica, each linked to its master.
			nodes, _ := n.CLI("CLUSTER", "NODES")
			if got := strings.Count(nodes, "slave"); got != masters*replicas {
				return fmt.Errorf("%s knows %d replicas, want %d", n.Addr(), got, masters*replicas)
			}
			if n.Info("replication", "role") == "slave" && n.Info("replication", "master_link_status") != "up" {
				return fmt.Errorf("%s: replica not linked to its master yet", n.Addr())
			}
		}
		return nil
	})
	if err != nil {
		c.Stop()
	}
	return c, err
}

// FailedOver reports nil once another node serves the slots dead served:
// a live node marks it failed and the Cluster covers every slot.
func (c *RedisCluster) FailedOver(dead *Redis) error {
	for _, n := range c.Nodes {
		if n == dead {
			continue
		}
		nodes, err := n.CLI("CLUSTER", "NODES")
		if err != nil {
			continue
		}
		failed := false
		for _, line := range strings.Split(nodes, "\n") {
			if strings.Contains(line, dead.Addr()+"@") && strings.Contains(line, "fail") && !strings.Contains(line, "fail?") {
				failed = true
			}
		}
		info, _ := n.CLI("CLUSTER", "INFO")
		if !failed || !strings.Contains(info, "cluster_slots_ok:16384") {
			return fmt.Errorf("%s: not failed over yet", dead.Addr())
		}
		return nil
	}
	return fmt.Errorf("no live node")
}
