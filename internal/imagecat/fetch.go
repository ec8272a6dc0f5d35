package imagecat

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"github.com/bangerdev/banger/internal/errkind"
)

// FetchOptions tune Fetch.
type FetchOptions struct {
	// Client is the HTTP client (http.DefaultClient when nil).
	Client *http.Client
	// Progress, when set, is told the bytes received so far and the total.
	Progress func(done, total int64)
}

// Fetch downloads the bundle of catalog image im from url and extracts it
// into dir (see Extract): the stream is verified against im's pinned
// sha256 and size as it arrives, and the manifest must describe im.
func Fetch(ctx context.Context, url string, im Image, dir string, opts FetchOptions) (Manifest, error) {
	if im.Bundle == "" {
		return Manifest{}, errkind.New(errkind.InvalidArgument, "catalog image %q has no bundle", im.Name)
	}
	if !hexRE.MatchString(im.SHA256) {
		return Manifest{}, errkind.New(errkind.InvalidArgument, "catalog image %q: bad sha256 pin %q", im.Name, im.SHA256)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Manifest{}, fmt.Errorf("creating %s: %w", dir, err)
	}
	client := opts.Client
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Manifest{}, errkind.Wrap(errkind.InvalidArgument, err, "bundle URL %s", url)
	}
	resp, err := client.Do(req)
	if err != nil {
		return Manifest{}, errkind.Wrap(errkind.Unavailable, err, "fetching %s", url)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		kind := errkind.Unavailable
		if resp.StatusCode == http.StatusNotFound {
			kind = errkind.NotFound
		}
		return Manifest{}, errkind.New(kind, "fetching %s: %s", url, resp.Status)
	}
	if resp.ContentLength > 0 && resp.ContentLength != im.Size {
		return Manifest{}, bundleErr("%s is %d bytes, the catalog pins %d", url, resp.ContentLength, im.Size)
	}
	var progress func(int64)
	if opts.Progress != nil {
		progress = func(n int64) { opts.Progress(n, im.Size) }
	}
	m, err := extract(ctx, resp.Body, Pin{SHA256: im.SHA256, Size: im.Size}, dir, progress)
	if err != nil {
		return Manifest{}, fmt.Errorf("fetching %s: %w", im.Name, err)
	}
	if m.Name != im.Name || m.Arch != im.Arch {
		os.Remove(dir + "/" + RootfsName)
		os.Remove(dir + "/" + ManifestName)
		return Manifest{}, bundleErr("%s holds %s/%s, not %s/%s", url, m.Name, m.Arch, im.Name, im.Arch)
	}
	return m, nil
}
