package launch

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Reply is the demo backend's answer.
type Reply struct {
	Host    string `json:"host"`
	Session string `json:"session"`
	Count   int    `json:"count"`
	// Told are the x-session-* and x-affinity-* request headers as the
	// backend received them (several copies joined by commas).
	Told map[string]string `json:"told"`
}

// Client is one browser-like user: its own cookie jar and connection.
type Client struct {
	http *http.Client
	base string
}

// NewClient returns a user of the stack at base (Envoy's listener URL).
func NewClient(base string) *Client {
	jar, _ := cookiejar.New(nil)
	return &Client{base: base, http: &http.Client{
		Jar:       jar,
		Timeout:   5 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 1},
	}}
}

// NewClientVia returns a user of the service at base (a URL naming the
// service, e.g. http://web.shop.svc.cluster.local) whose connections all go
// to addr (a sidecar's outbound listener on loopback): what a workload does
// whose traffic its sidecar intercepts.
func NewClientVia(base, addr string) *Client {
	c := NewClient(base)
	var d net.Dialer
	c.http.Transport = &http.Transport{MaxIdleConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		}}
	return c
}

// NewClientFrom returns a user of the stack at base whose connections come
// from the loopback address ip (e.g. 127.0.0.7): a client of its own
// address, for pools keyed by the client address.
func NewClientFrom(base, ip string) *Client {
	c := NewClient(base)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c.http.Transport = &http.Transport{MaxIdleConnsPerHost: 1, DialContext: d.DialContext}
	return c
}

// Close closes the client's idle connection: a client that is dropped
// otherwise keeps it (and a file descriptor on both sides) open.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Get sends GET path with the jar's cookies and extra headers ("k", "v", ...)
// and decodes the backend's reply. A status other than 200 is an error.
func (c *Client) Get(path string, headers ...string) (Reply, *http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, c.base+path, nil)
	if err != nil {
		return Reply{}, nil, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return Reply{}, nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return Reply{}, resp, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	var r Reply
	if err := json.Unmarshal(body, &r); err != nil {
		return Reply{}, resp, fmt.Errorf("reply %q: %w", body, err)
	}
	return r, resp, nil
}

// Cookie returns the value of the named cookie in the jar.
func (c *Client) Cookie(name string) string {
	u, _ := url.Parse(c.base)
	for _, ck := range c.http.Jar.Cookies(u) {
		if ck.Name == name {
			return ck.Value
		}
	}
	return ""
}

// SetCookie puts a cookie in the jar, as a client that forges one would.
func (c *Client) SetCookie(name, value string) {
	u, _ := url.Parse(c.base)
	c.http.Jar.SetCookies(u, []*http.Cookie{{Name: name, Value: value, Path: "/"}})
}

// TokenClaim reads a claim of a session token without verifying it (the
// tests check where the server said a session goes).
func TokenClaim(token, claim string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var m map[string]any
	if json.Unmarshal(payload, &m) != nil {
		return ""
	}
	switch v := m[claim].(type) {
	case string:
		return v
	case float64: // iat, exp: whole seconds
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return ""
}
