// Package imagepull pulls OCI images into a digest-verified blob cache,
// flattens their layers into one tar stream and builds ext4 root
// filesystems from them, streaming from the registry to the image file
// without root and without a temporary tree.
package imagepull

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/bangerdev/banger/internal/errkind"
)

// Platform is the only platform banger runs.
var platform = v1.Platform{OS: "linux", Architecture: "amd64"}

// Options configures a pull.
type Options struct {
	// CacheDir is the blob cache (an OCI image layout), shared by pulls.
	CacheDir string
	// Insecure lists registries ("host" or "host:port") that may be reached
	// over plain HTTP in addition to loopback ones.
	Insecure []string
	// Keychain resolves credentials; nil means authn.DefaultKeychain
	// (docker config.json and credential helpers).
	Keychain authn.Keychain
	// Progress, if set, receives progress events (from several goroutines,
	// serialised).
	Progress func(Progress)
	// Jobs bounds parallel layer downloads (default 3).
	Jobs int
	// Transport is the base HTTP transport (default http.DefaultTransport).
	Transport http.RoundTripper
	// PureGo decompresses gzip layers in process even when igzip (Debian
	// package isal, about three times faster) is installed.
	PureGo bool
}

// Stage names a phase of a pull.
type Stage string

// The stages reported through Options.Progress.
const (
	StageResolving   Stage = "resolving"
	StageDownloading Stage = "downloading"
	StageFlattening  Stage = "flattening"
	StageWriting     Stage = "writing"
)

// Progress is one progress event. Layer is 1-based (bottom layer first) and
// Layers the layer count. While downloading, Bytes/Total count compressed
// bytes over all layers; while flattening, the compressed bytes of the
// current layer; while writing, Bytes is the image size once known.
type Progress struct {
	Stage  Stage
	Layer  int
	Layers int
	Digest string
	Bytes  int64
	Total  int64
}

// Config holds the OCI config fields banger uses.
type Config struct {
	Env        []string
	WorkingDir string
	User       string
	Entrypoint []string
	Cmd        []string
	Labels     map[string]string
}

// Layer describes one compressed layer blob.
type Layer struct {
	Digest    string
	MediaType string
	Size      int64
}

// Image is a resolved image whose blobs are in (or on their way into) the
// cache.
type Image struct {
	// Ref is the fully qualified reference that was pulled.
	Ref string
	// Digest is the manifest digest (of the linux/amd64 manifest when the
	// reference named an index).
	Digest string
	Config Config
	// Layers are ordered bottom to top.
	Layers []Layer
	// CompressedSize is the sum of the layer sizes.
	CompressedSize int64

	cache   *Cache
	fetches []*blobFetch
	pureGo  bool
}

// Pull resolves ref, downloads every missing layer into the blob cache and
// returns the image. Blobs already cached are not downloaded again, and a
// digest reference whose manifest is cached needs no registry at all.
func Pull(ctx context.Context, ref string, opts Options) (*Image, error) {
	s, err := newSession(ref, opts)
	if err != nil {
		return nil, err
	}
	img, err := s.resolve(ctx)
	if err != nil {
		return nil, err
	}
	wait := s.startDownloads(ctx, img)
	if err := wait(); err != nil {
		return nil, err
	}
	if err := s.cache.recordImage(ctx, s.ref.Name(), s.manifestDesc); err != nil {
		return nil, fmt.Errorf("pulling %s: %w", s.ref, err)
	}
	return img, nil
}

// session is the state of one pull.
type session struct {
	ref          name.Reference
	opts         Options
	cache        *Cache
	prog         *reporter
	manifestDesc v1.Descriptor

	pullerMu sync.Mutex
	puller   *remote.Puller
}

func newSession(ref string, opts Options) (*session, error) {
	r, err := ParseRef(ref, opts.Insecure)
	if err != nil {
		return nil, err
	}
	cache, err := OpenCache(opts.CacheDir)
	if err != nil {
		return nil, err
	}
	if opts.Jobs <= 0 {
		opts.Jobs = 3
	}
	return &session{ref: r, opts: opts, cache: cache, prog: &reporter{fn: opts.Progress}}, nil
}

func (s *session) remote(ctx context.Context) (*remote.Puller, error) {
	s.pullerMu.Lock()
	defer s.pullerMu.Unlock()
	if s.puller != nil {
		return s.puller, nil
	}
	kc := s.opts.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	base := s.opts.Transport
	if base == nil {
		base = remote.DefaultTransport
	}
	tr := &policyTransport{base: base, insecure: s.opts.Insecure}
	p, err := remote.NewPuller(
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithTransport(tr),
		remote.WithPlatform(platform),
		remote.WithJobs(s.opts.Jobs),
		remote.WithUserAgent("banger"),
	)
	if err != nil {
		return nil, err
	}
	s.puller = p
	return p, nil
}

// resolve finds the linux/amd64 manifest and the config, from the cache when
// the reference is a cached digest, from the registry otherwise, and stores
// both in the cache.
func (s *session) resolve(ctx context.Context) (*Image, error) {
	s.prog.send(Progress{Stage: StageResolving})
	manifest, mdesc, err := s.fetchManifest(ctx)
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(manifest))
	if err != nil {
		return nil, fmt.Errorf("pulling %s: parsing manifest: %w", s.ref, err)
	}
	if m.Config.Digest.Hex == "" {
		return nil, errkind.New(errkind.InvalidArgument, "pulling %s: manifest %s has no config (not an image?)", s.ref, mdesc.Digest)
	}
	cfgRaw, err := s.config(ctx, m.Config)
	if err != nil {
		return nil, err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(cfgRaw))
	if err != nil {
		return nil, fmt.Errorf("pulling %s: parsing config: %w", s.ref, err)
	}
	if cfg.Architecture != "" && cfg.Architecture != platform.Architecture || cfg.OS != "" && cfg.OS != platform.OS {
		return nil, errkind.New(errkind.InvalidArgument, "image %s is %s/%s; banger needs linux/amd64", s.ref, cfg.OS, cfg.Architecture)
	}
	if err := s.cache.putSmall(mdesc.Digest, manifest); err != nil {
		return nil, fmt.Errorf("pulling %s: manifest: %w", s.ref, err)
	}
	s.manifestDesc = mdesc
	img := &Image{Ref: s.ref.Name(), Digest: mdesc.Digest.String(), cache: s.cache, pureGo: s.opts.PureGo}
	img.Config = Config{
		Env: cfg.Config.Env, WorkingDir: cfg.Config.WorkingDir, User: cfg.Config.User,
		Entrypoint: cfg.Config.Entrypoint, Cmd: cfg.Config.Cmd, Labels: cfg.Config.Labels,
	}
	for _, l := range m.Layers {
		switch {
		case l.MediaType.IsLayer():
		case l.MediaType == "application/vnd.oci.image.layer.v1.tar+zstd",
			l.MediaType == types.OCIUncompressedLayer:
		default:
			return nil, errkind.New(errkind.InvalidArgument, "pulling %s: layer %s has unsupported media type %q", s.ref, l.Digest, l.MediaType)
		}
		if l.Digest.Algorithm != "sha256" {
			return nil, errkind.New(errkind.InvalidArgument, "pulling %s: layer digest %s is not sha256", s.ref, l.Digest)
		}
		img.Layers = append(img.Layers, Layer{Digest: l.Digest.String(), MediaType: string(l.MediaType), Size: l.Size})
		img.CompressedSize += l.Size
	}
	if len(img.Layers) == 0 {
		return nil, errkind.New(errkind.InvalidArgument, "pulling %s: image has no layers", s.ref)
	}
	return img, nil
}

// config returns the config blob from the cache, or downloads it (once,
// under its blob lock) and caches it.
func (s *session) config(ctx context.Context, d v1.Descriptor) ([]byte, error) {
	if raw, err := s.cache.readSmall(d.Digest); err == nil {
		return raw, nil
	}
	unlock, err := s.cache.lock(ctx, blobLockKey(d.Digest))
	if err != nil {
		return nil, s.classify(err)
	}
	defer unlock()
	if raw, err := s.cache.readSmall(d.Digest); err == nil {
		return raw, nil
	}
	p, err := s.remote(ctx)
	if err != nil {
		return nil, s.classify(err)
	}
	raw, err := fetchSmall(ctx, p, s.ref.Context().Digest(d.Digest.String()), d.Size)
	if err != nil {
		return nil, s.classify(err)
	}
	if err := s.cache.putSmall(d.Digest, raw); err != nil {
		return nil, fmt.Errorf("pulling %s: config: %w", s.ref, err)
	}
	return raw, nil
}

// fetchManifest returns the raw linux/amd64 image manifest and its
// descriptor.
func (s *session) fetchManifest(ctx context.Context) ([]byte, v1.Descriptor, error) {
	if d, ok := s.ref.(name.Digest); ok {
		if h, err := v1.NewHash(d.DigestStr()); err == nil {
			if raw, err := s.cache.readSmall(h); err == nil {
				if mt, ok := imageManifestType(raw); ok {
					return raw, v1.Descriptor{MediaType: mt, Digest: h, Size: int64(len(raw))}, nil
				}
			}
		}
	}
	p, err := s.remote(ctx)
	if err != nil {
		return nil, v1.Descriptor{}, s.classify(err)
	}
	desc, err := p.Get(ctx, s.ref)
	if err != nil {
		return nil, v1.Descriptor{}, s.classify(err)
	}
	switch {
	case desc.MediaType.IsImage():
		return desc.Manifest, desc.Descriptor, nil
	case desc.MediaType.IsIndex():
	default:
		return nil, v1.Descriptor{}, errkind.New(errkind.InvalidArgument, "pulling %s: unsupported manifest type %q", s.ref, desc.MediaType)
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, v1.Descriptor{}, fmt.Errorf("pulling %s: parsing index: %w", s.ref, err)
	}
	var child *v1.Descriptor
	for i := range idx.Manifests {
		m := &idx.Manifests[i]
		if m.Platform != nil && m.Platform.OS == platform.OS && m.Platform.Architecture == platform.Architecture && m.MediaType.IsImage() {
			child = m
			break
		}
	}
	if child == nil {
		return nil, v1.Descriptor{}, errkind.New(errkind.NotFound, "image %s has no linux/amd64 variant", s.ref)
	}
	if raw, err := s.cache.readSmall(child.Digest); err == nil {
		return raw, *child, nil
	}
	cd, err := p.Get(ctx, s.ref.Context().Digest(child.Digest.String()))
	if err != nil {
		return nil, v1.Descriptor{}, s.classify(err)
	}
	if !cd.MediaType.IsImage() {
		return nil, v1.Descriptor{}, errkind.New(errkind.InvalidArgument, "pulling %s: linux/amd64 entry is %q, not an image", s.ref, cd.MediaType)
	}
	return cd.Manifest, cd.Descriptor, nil
}

// imageManifestType reports the media type of a cached image manifest.
func imageManifestType(raw []byte) (types.MediaType, bool) {
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil || m.Config.Digest.Hex == "" {
		return "", false
	}
	mt := m.MediaType
	if mt == "" {
		mt = types.OCIManifestSchema1
	}
	return mt, mt.IsImage()
}

// fetchSmall downloads a small blob (config) through the verifying layer
// reader.
func fetchSmall(ctx context.Context, p *remote.Puller, ref name.Digest, size int64) ([]byte, error) {
	l, err := p.Layer(ctx, ref)
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if size <= 0 || size > 16<<20 {
		size = 16 << 20
	}
	b, err := io.ReadAll(io.LimitReader(rc, size+1))
	if err != nil {
		return nil, err
	}
	return b, nil
}

// startDownloads starts fetching every layer (at most Jobs at once, top
// layer first since the flattener reads it first) and returns a function
// waiting for all of them. Readers of img.Layers can start at once.
func (s *session) startDownloads(ctx context.Context, img *Image) (wait func() error) {
	n := len(img.Layers)
	img.fetches = make([]*blobFetch, n)
	for i, l := range img.Layers {
		h, _ := v1.NewHash(l.Digest)
		img.fetches[i] = newBlobFetch(h, l.Size)
	}
	var done int64
	var mu sync.Mutex
	sem := make(chan struct{}, s.opts.Jobs)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := n - 1; i >= 0; i-- {
		b := img.fetches[i]
		wg.Add(1)
		go func(i int, b *blobFetch) {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				b.finish("", ctx.Err())
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			open := func(ctx context.Context) (io.ReadCloser, error) {
				p, err := s.remote(ctx)
				if err != nil {
					return nil, err
				}
				l, err := p.Layer(ctx, s.ref.Context().Digest(b.digest.String()))
				if err != nil {
					return nil, err
				}
				return l.Compressed()
			}
			onBytes := func(k int64) {
				mu.Lock()
				done += k
				d := done
				mu.Unlock()
				s.prog.sendThrottled(Progress{Stage: StageDownloading, Layer: i + 1, Layers: n, Digest: b.digest.String(), Bytes: d, Total: img.CompressedSize})
			}
			if err := s.cache.download(ctx, b, open, onBytes); err != nil {
				errs[i] = fmt.Errorf("layer %d/%d (%s): %w", i+1, n, b.digest, s.classify(err))
			}
		}(i, b)
	}
	return func() error {
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return fmt.Errorf("pulling %s: %w", s.ref, err)
			}
		}
		return nil
	}
}

// classify maps registry and network errors onto errkind kinds with a
// message naming the reference.
func (s *session) classify(err error) error {
	if err == nil {
		return nil
	}
	var k *errkind.Kind
	if k = errkind.Of(err); k != nil {
		return err
	}
	ref := s.ref.String()
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return errkind.Wrap(errkind.Canceled, err, "pulling %s", ref)
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		codes := map[transport.ErrorCode]bool{}
		for _, e := range terr.Errors {
			codes[e.Code] = true
		}
		switch {
		case terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden ||
			codes[transport.UnauthorizedErrorCode] || codes[transport.DeniedErrorCode]:
			return errkind.Wrap(errkind.Unavailable, err,
				"unauthorized to pull %s: log in with `docker login %s` or configure a docker credential helper (banger reads ~/.docker/config.json); the image may also not exist",
				ref, s.ref.Context().RegistryStr())
		case terr.StatusCode == http.StatusNotFound || codes[transport.ManifestUnknownErrorCode] ||
			codes[transport.NameUnknownErrorCode] || codes[transport.BlobUnknownErrorCode]:
			return errkind.Wrap(errkind.NotFound, err, "image %s not found", ref)
		case terr.StatusCode == http.StatusTooManyRequests || terr.StatusCode >= 500:
			return errkind.Wrap(errkind.Unavailable, err, "registry %s unavailable", s.ref.Context().RegistryStr())
		}
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	var nerr net.Error
	var uerr *url.Error
	var derr *net.DNSError
	if errors.As(err, &derr) || errors.As(err, &nerr) || errors.As(err, &uerr) || errors.Is(err, errPlainHTTP) {
		return errkind.Wrap(errkind.Unavailable, err, "registry %s unreachable while pulling %s", s.ref.Context().RegistryStr(), ref)
	}
	return fmt.Errorf("pulling %s: %w", ref, err)
}

// errPlainHTTP is returned for plain-HTTP requests the policy refuses.
var errPlainHTTP = errors.New("plain HTTP refused")

// policyTransport refuses plain-HTTP requests to registries that are not
// loopback or explicitly insecure (ggcr itself would use HTTP for private
// addresses too).
type policyTransport struct {
	base     http.RoundTripper
	insecure []string
}

func (t *policyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !PlainHTTPAllowed(req.URL.Host, t.insecure) {
		return nil, fmt.Errorf("%w to %s: add it to the insecure registries to allow it", errPlainHTTP, req.URL.Host)
	}
	return t.base.RoundTrip(req)
}

// reporter serialises progress callbacks and throttles byte updates.
type reporter struct {
	mu   sync.Mutex
	fn   func(Progress)
	last Progress
	n    int
}

func (r *reporter) send(p Progress) {
	if r == nil || r.fn == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last = p
	r.fn(p)
}

// sendThrottled forwards roughly one event per MiB (always the final one).
func (r *reporter) sendThrottled(p Progress) {
	if r == nil || r.fn == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if p.Stage == r.last.Stage && p.Layer == r.last.Layer && p.Bytes-r.last.Bytes < 1<<20 && p.Bytes != p.Total {
		return
	}
	r.last = p
	r.fn(p)
}
