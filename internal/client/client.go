// Package client is the typed Go client of bangerd's API over its unix socket.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/errkind"
)

// Client talks to one daemon socket.
type Client struct {
	socket string
	http   *http.Client
}

// New returns a client for the daemon listening on socket.
func New(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression: true,
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// Socket is the socket path this client dials.
func (c *Client) Socket() string { return c.socket }

// ErrNoDaemon means nothing answers on the socket (missing or stale).
var ErrNoDaemon = errors.New("no daemon is listening")

func (c *Client) url(path string) string { return "http://banger" + api.Prefix + path }

func (c *Client) newRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w on %s", ErrNoDaemon, c.socket)
		}
		if req.Context().Err() != nil {
			return nil, req.Context().Err()
		}
		return nil, errkind.Wrap(errkind.Unavailable, err, "talking to bangerd on %s", c.socket)
	}
	return resp, nil
}

// Do performs a JSON call and decodes the response into out (if non-nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	req, err := c.newRequest(ctx, method, path, in)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decoding %s %s response: %w", method, path, err)
	}
	return nil
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var er api.ErrorResponse
	if err := json.Unmarshal(b, &er); err != nil || er.Error.Message == "" {
		return fmt.Errorf("daemon answered %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return er.Error.Err()
}

// Stream performs a streamed call: onEvent sees each progress event; the
// final result is decoded into out.
func (c *Client) Stream(ctx context.Context, method, path string, in any, onEvent func(api.Event), out any) error {
	req, err := c.newRequest(ctx, method, path, in)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var line api.StreamLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return fmt.Errorf("decoding stream line: %w", err)
		}
		switch {
		case line.Event != nil:
			if onEvent != nil {
				onEvent(*line.Event)
			}
		case line.Error != nil:
			return line.Error.Err()
		case line.Result != nil:
			if out != nil {
				if err := json.Unmarshal(line.Result, out); err != nil {
					return fmt.Errorf("decoding result: %w", err)
				}
			}
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errkind.Wrap(errkind.Unavailable, err, "reading stream from bangerd")
	}
	return errkind.New(errkind.Unavailable, "bangerd closed the stream without a result (see `banger daemon logs`)")
}

// Version asks the daemon who it is.
func (c *Client) Version(ctx context.Context) (api.VersionInfo, error) {
	var v api.VersionInfo
	err := c.Do(ctx, http.MethodGet, "/version", nil, &v)
	return v, err
}

// Health asks the daemon whether it is healthy.
func (c *Client) Health(ctx context.Context) error {
	return c.Do(ctx, http.MethodGet, "/health", nil, nil)
}

// Shutdown asks the daemon to exit.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.Do(ctx, http.MethodPost, "/daemon/shutdown", nil, nil)
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
