// Command demo runs the whole thing on localhost (Envoy, envoy-affinity and
// three demo backends), takes a short tour of what session affinity does,
// and keeps serving until Ctrl-C. With DEMO_EXIT=1 it stops after the tour.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/envoy-affinity/envoy-affinity/envoy/harness"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "envoy-affinity-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Println("building envoy-affinity and the demo backend ...")
	bins, err := harness.Build(dir)
	if err != nil {
		return err
	}
	s, err := harness.StartStack(ctx, bins, harness.Options{Dir: dir})
	if err != nil {
		return err
	}
	defer s.Close()

	fmt.Printf("\nEnvoy listens on %s — mode: opaque (Envoy asks envoy-affinity on every request)\n", s.URL("/"))
	fmt.Printf("hosts: ")
	for _, b := range s.Backends {
		fmt.Printf("%s=%s  ", b.Name, b.Address())
	}
	fmt.Printf("\nlogs and configs: %s\n", dir)

	fmt.Println("\n1. Six users open a session and send three requests each.")
	fmt.Println("   The backend counts requests per session in memory: a session that moved would start again at 1.")
	users := make([]*harness.Client, 6)
	where := make([]string, len(users))
	for i := range users {
		users[i] = harness.NewClient(s.URL(""))
		var served []string
		for range 3 {
			r, _, err := users[i].Get("/")
			if err != nil {
				return err
			}
			served = append(served, fmt.Sprintf("%s#%d", r.Host, r.Count))
			where[i] = r.Host
		}
		fmt.Printf("   user %d: %s\n", i+1, strings.Join(served, "  "))
	}

	fmt.Println("\n2. backend-2 leaves the pool (the config file changes; no restart).")
	if err := s.WriteConfig(0, 2); err != nil {
		return err
	}
	if err := s.WaitPoolHosts(ctx, "backend-1", "backend-3"); err != nil {
		return err
	}
	for i, u := range users {
		r, _, err := u.Get("/")
		if err != nil {
			return err
		}
		switch {
		case r.Host != where[i]:
			fmt.Printf("   user %d: was on %s, moved to its successor %s (new cookie issued)\n", i+1, where[i], r.Host)
		default:
			fmt.Printf("   user %d: stays on %s, request #%d\n", i+1, r.Host, r.Count)
		}
	}

	fmt.Println("\n3. backend-2 comes back: sessions already moved stay where they are; new sessions reach it again.")
	if err := s.WriteConfig(0, 1, 2); err != nil {
		return err
	}
	if err := s.WaitPoolHosts(ctx, "backend-1", "backend-2", "backend-3"); err != nil {
		return err
	}
	for i, u := range users {
		r, _, err := u.Get("/")
		if err != nil {
			return err
		}
		fmt.Printf("   user %d: %s#%d\n", i+1, r.Host, r.Count)
	}
	var fresh []string
	for range 9 {
		r, _, err := harness.NewClient(s.URL("")).Get("/")
		if err != nil {
			return err
		}
		fresh = append(fresh, r.Host)
	}
	fmt.Printf("   nine new users: %s\n", strings.Join(fresh, " "))

	if os.Getenv("DEMO_EXIT") == "1" {
		fmt.Println("\ntour done (DEMO_EXIT=1).")
		return nil
	}
	fmt.Printf("\nTry it (the cookie jar keeps your session):\n  curl -c /tmp/jar -b /tmp/jar -i %s\n", s.URL("/"))
	fmt.Printf("Pools as the server sees them:\n  curl %s\n", s.ServerURL("/debug/pools"))
	fmt.Printf("Edit %s to add, remove or re-weight hosts; it is reloaded within a second.\n", s.ConfigPath)
	fmt.Println("Ctrl-C stops everything.")
	select {
	case <-ctx.Done():
	case <-s.Envoy.Done():
		return fmt.Errorf("envoy exited:\n%s", s.Envoy.Tail())
	case <-s.Server.Done():
		return fmt.Errorf("envoy-affinity exited:\n%s", s.Server.Tail())
	}
	fmt.Println("\nstopping ...")
	return nil
}
