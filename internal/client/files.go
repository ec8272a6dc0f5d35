package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/workspace"
)

// rawRequest performs a call whose request body is a raw stream (nil for
// none) and returns the response when its status is a success.
func (c *Client) rawRequest(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", workspace.TarContentType)
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

func decodeJSON(resp *http.Response, out any) error {
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decoding %s response: %w", resp.Request.URL.Path, err)
	}
	return nil
}

// PutFiles extracts the tar stream r into the guest directory dir of a
// running VM. preserveOwners keeps the archive's uid/gid (else root).
func (c *Client) PutFiles(ctx context.Context, name, dir string, r io.Reader, preserveOwners bool) (agentproto.PutResult, error) {
	q := url.Values{"dir": {dir}}
	if preserveOwners {
		q.Set("owners", "true")
	}
	var out agentproto.PutResult
	resp, err := c.rawRequest(ctx, http.MethodPut, vmPath(name, "/files?"+q.Encode()), bodyOf(r))
	if err != nil {
		return out, err
	}
	return out, decodeJSON(resp, &out)
}

// GetFiles returns a tar stream of the guest path p (entries named from
// its base name). A failure after the stream began surfaces as a read
// error instead of a clean end of stream.
func (c *Client) GetFiles(ctx context.Context, name, p string) (io.ReadCloser, error) {
	resp, err := c.rawRequest(ctx, http.MethodGet, vmPath(name, "/files?"+url.Values{"path": {p}}.Encode()), nil)
	if err != nil {
		return nil, err
	}
	return &trailerBody{resp: resp}, nil
}

// trailerBody turns the Banger-Error trailer into a read error.
type trailerBody struct{ resp *http.Response }

func (t *trailerBody) Read(p []byte) (int, error) {
	n, err := t.resp.Body.Read(p)
	if errors.Is(err, io.EOF) {
		if msg := t.resp.Trailer.Get(workspace.TarErrorTrailer); msg != "" {
			return n, errkind.New(errkind.Unavailable, "%s", msg)
		}
	}
	return n, err
}

func (t *trailerBody) Close() error { return t.resp.Body.Close() }

// PrepareWorkspace sends the tar stream r (workspace.WriteTar of a plan) to
// a running VM and records rec on it.
func (c *Client) PrepareWorkspace(ctx context.Context, name string, rec workspace.Record, r io.Reader) (workspace.Record, error) {
	var out workspace.Record
	resp, err := c.rawRequest(ctx, http.MethodPost, vmPath(name, "/workspace?"+rec.Query().Encode()), bodyOf(r))
	if err != nil {
		return out, err
	}
	return out, decodeJSON(resp, &out)
}

// Workspace returns the workspace recorded on a VM.
func (c *Client) Workspace(ctx context.Context, name string) (workspace.Record, error) {
	var out workspace.Record
	return out, c.Do(ctx, http.MethodGet, vmPath(name, "/workspace"), nil, &out)
}

// ExportWorkspace writes the patch of a VM's workspace against base
// ("" = what was copied) to w and returns its size.
func (c *Client) ExportWorkspace(ctx context.Context, name, base string, w io.Writer) (int64, error) {
	path := "/workspace/export"
	if base != "" {
		path += "?" + url.Values{"base": {base}}.Encode()
	}
	resp, err := c.rawRequest(ctx, http.MethodGet, vmPath(name, path), nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("patch truncated: %s of %s bytes", strconv.FormatInt(n, 10), strconv.FormatInt(resp.ContentLength, 10))
	}
	if err != nil {
		return n, fmt.Errorf("receiving the patch: %w", err)
	}
	return n, nil
}

// bodyOf hides any Len/Seek methods of r so that net/http streams it with
// chunked encoding instead of trusting a length.
func bodyOf(r io.Reader) io.Reader {
	if r == nil {
		return http.NoBody
	}
	return struct{ io.Reader }{r}
}
