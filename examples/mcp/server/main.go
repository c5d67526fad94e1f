// Command server is a small MCP server (the official Go SDK, Streamable
// HTTP, stateful sessions) for the MCP gateway recipe and its test: a tool
// "whoami" answers with the server's name, the session's id and how many
// times the session called it, so a session that reaches another replica
// shows (that replica does not know the session and answers 404).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Calls is what whoami returns.
type Calls struct {
	Server  string `json:"server"`
	Session string `json:"session"`
	Calls   int    `json:"calls"`
	// Internal names the gateway's own x-affinity-* request headers that
	// reached the server (there should be none).
	Internal []string `json:"internal,omitempty"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "listen address")
	name := flag.String("name", "mcp-1", "server name, returned by the whoami tool and GET /")
	flag.Parse()

	var mu sync.Mutex
	calls := map[string]int{} // session id → whoami calls
	server := mcp.NewServer(&mcp.Implementation{Name: *name, Version: "v1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "whoami", Description: "the server's name, the session and its call count"},
		func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, Calls, error) {
			id := req.Session.ID()
			mu.Lock()
			calls[id]++
			n := calls[id]
			mu.Unlock()
			var internal []string
			if req.Extra != nil {
				for h := range req.Extra.Header {
					if strings.HasPrefix(strings.ToLower(h), "x-affinity") {
						internal = append(internal, h)
					}
				}
			}
			return nil, Calls{Server: *name, Session: id, Calls: n, Internal: internal}, nil
		})

	mux := http.NewServeMux()
	mux.Handle("/mcp", mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, *name) })

	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
