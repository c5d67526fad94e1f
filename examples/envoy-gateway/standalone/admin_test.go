package standalone_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// envoyAdmin finds the admin address of the Envoy that Envoy Gateway
// started as its child (host infrastructure, admin on an ephemeral port):
// the port, among the child's listening sockets, whose /ready answers LIVE.
func envoyAdmin(gatewayPid int) (string, error) {
	procs, err := filepath.Glob("/proc/[0-9]*/status")
	if err != nil {
		return "", err
	}
	for _, status := range procs {
		data, err := os.ReadFile(status)
		if err != nil || !strings.Contains(string(data), "\nPPid:\t"+strconv.Itoa(gatewayPid)+"\n") {
			continue
		}
		pid := filepath.Base(filepath.Dir(status))
		for _, port := range listeningPorts(pid) {
			addr := "127.0.0.1:" + strconv.Itoa(port)
			c := http.Client{Timeout: time.Second}
			resp, err := c.Get("http://" + addr + "/ready")
			if err != nil {
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.TrimSpace(string(body)) == "LIVE" {
				return addr, nil
			}
		}
	}
	return "", fmt.Errorf("no child of process %d has an Envoy admin listener", gatewayPid)
}

// listeningPorts are the TCP ports process pid listens on: its socket
// inodes, looked up among the listening sockets of its network namespace.
func listeningPorts(pid string) []int {
	inodes := map[string]bool{}
	fds, _ := filepath.Glob("/proc/" + pid + "/fd/*")
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err == nil && strings.HasPrefix(target, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] = true
		}
	}
	var ports []int
	for _, table := range []string{"tcp", "tcp6"} {
		data, err := os.ReadFile("/proc/" + pid + "/net/" + table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			// local_address rem_address st ... inode (field 9)
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] {
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); err == nil {
				ports = append(ports, int(p))
			}
		}
	}
	return ports
}
