// Command demo runs the whole thing on localhost (Envoy, envoy-affinity and
// three demo backends), takes a short tour of what session affinity does,
// and keeps serving until Ctrl-C. With DEMO_EXIT=1 it stops after the tour;
// DEMO_MODE picks the mode (verified, opaque or native; verified by default).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/envoy-affinity/envoy-affinity/internal/launch"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

var modeSummary = map[string]string{
	"verified": "Envoy verifies the signed session cookie and routes established sessions itself; envoy-affinity sees new, expired and re-bound ones",
	"opaque":   "Envoy asks envoy-affinity on every request",
	"native":   "Envoy's own stateful_session cookie; envoy-affinity only places new sessions",
}

func run(ctx context.Context) error {
	fmt.Println("building envoy-affinity and the demo backend ...")
	dir, bins, remove, err := launch.BuildTemp("demo")
	if err != nil {
		return err
	}
	defer remove()
	mode := os.Getenv("DEMO_MODE")
	if mode == "" {
		mode = "verified"
	}
	s, err := launch.StartStack(ctx, bins, launch.Options{Dir: dir, Mode: mode})
	if err != nil {
		return err
	}
	defer s.Close()

	fmt.Printf("\nEnvoy listens on %s — mode: %s (%s)\n", s.URL("/"), mode, modeSummary[mode])
	fmt.Printf("hosts: ")
	for _, b := range s.Backends {
		fmt.Printf("%s=%s  ", b.Name, b.Address())
	}
	fmt.Printf("\nlogs and configs: %s\n", dir)

	fmt.Println("\n1. Users open a session and send three requests each (until two are on backend-2).")
	fmt.Println("   The backend counts requests per session in memory: a session that moved would start again at 1.")
	var (
		users []*launch.Client
		where []string
		on2   int
	)
	for len(users) < 6 || (on2 < 2 && len(users) < 12) {
		u := launch.NewClient(s.URL(""))
		var served []string
		var host string
		for range 3 {
			r, _, err := u.Get("/")
			if err != nil {
				return err
			}
			served = append(served, fmt.Sprintf("%s#%d", r.Host, r.Count))
			host = r.Host
		}
		if host == "backend-2" {
			on2++
		}
		users = append(users, u)
		where = append(where, host)
		fmt.Printf("   user %d: %s\n", len(users), strings.Join(served, "  "))
	}

	fmt.Println("\n2. backend-2 leaves Envoy's cluster (EDS) and the service's pool (no restart).")
	if err := s.SetHosts(ctx, 0, 2); err != nil {
		return err
	}
	for i, u := range users {
		r, _, err := u.Get("/")
		if err != nil {
			return err
		}
		switch {
		case r.Host != where[i] && mode == "native":
			fmt.Printf("   user %d: was on %s, now on %s (Envoy's pick), request #%d\n", i+1, where[i], r.Host, r.Count)
		case r.Host != where[i]:
			fmt.Printf("   user %d: was on %s, now on its agreed successor %s, request #%d\n", i+1, where[i], r.Host, r.Count)
		default:
			fmt.Printf("   user %d: stays on %s, request #%d\n", i+1, r.Host, r.Count)
		}
	}

	fmt.Println("\n3. backend-2 comes back; new sessions reach it again.")
	switch mode {
	case "opaque":
		fmt.Println("   Sessions already moved stay where they are (their cookie was re-bound).")
	case "verified":
		fmt.Println("   Envoy marked the moved sessions' first responses as served elsewhere; the service")
		fmt.Println("   re-bound their tokens there: they stay where they are.")
	case "native":
		fmt.Println("   Envoy re-wrote the moved sessions' cookies: they stay where they are.")
	}
	if err := s.SetHosts(ctx, 0, 1, 2); err != nil {
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
		r, _, err := launch.NewClient(s.URL("")).Get("/")
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
	fmt.Println("Other modes: DEMO_MODE=opaque make demo, DEMO_MODE=native make demo.")
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
