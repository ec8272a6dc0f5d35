// Package imagecat holds banger's image catalog: the images `banger image
// pull NAME` knows by name, embedded in the binary (go:embed JSON with a
// format version), and the bundle format they are published in.
//
// A catalog image is either a bundle — a tar+zstd holding exactly
// rootfs.ext4 and manifest.json, named <name>-<arch>-<sha256 prefix>.tar.zst
// and pinned by its sha256 — or an OCI reference pulled through the
// registry path. Bundles are fetched from the catalog's base URL, which a
// team or CI can point at its own server (config key catalog_url), and a
// catalog file of its own can extend the embedded one (config key
// image_catalog).
package imagecat

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/kernel"
	"github.com/bangerdev/banger/internal/model"
)

// FormatVersion is the catalog format this code reads.
const FormatVersion = 1

// DefaultArch is the only architecture banger runs guests on today.
const DefaultArch = "amd64"

// PrefixLen is how many hex digits of the sha256 a bundle name carries.
const PrefixLen = 12

//go:embed catalog.json
var catalogJSON []byte

// Image is one catalog entry.
type Image struct {
	Name        string `json:"name"`
	Distro      string `json:"distro"`
	Arch        string `json:"arch"`
	KernelRef   string `json:"kernel_ref"`
	Description string `json:"description,omitempty"`
	// Bundle is the bundle's file name under the base URL, or an absolute
	// http(s) URL; its last path element is always the content-addressed
	// name <name>-<arch>-<sha256 prefix>.tar.zst.
	Bundle string `json:"bundle,omitempty"`
	// SHA256 and Size pin the bundle file (hex digest, bytes).
	SHA256 string `json:"sha256,omitempty"`
	Size   int64  `json:"size,omitempty"`
	// OCIRef is pulled through the registry when there is no bundle, or
	// when the bundle is relative and no base URL is configured.
	OCIRef string `json:"oci_ref,omitempty"`
}

// Catalog is a parsed catalog file.
type Catalog struct {
	Version int `json:"version"`
	// BaseURL is where relative bundle names are fetched from.
	BaseURL string `json:"base_url,omitempty"`
	// Default names the image `vm run` uses when none is given.
	Default string  `json:"default,omitempty"`
	Images  []Image `json:"images"`
}

var hexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// BundleName is the content-addressed file name of a bundle.
func BundleName(name, arch, sha256hex string) string {
	p := sha256hex
	if len(p) > PrefixLen {
		p = p[:PrefixLen]
	}
	return fmt.Sprintf("%s-%s-%s.tar.zst", name, arch, p)
}

// Embedded returns the catalog compiled into banger.
func Embedded() (*Catalog, error) {
	c, err := Parse(catalogJSON)
	if err != nil {
		return nil, fmt.Errorf("embedded image catalog: %w", err)
	}
	return c, nil
}

// Parse reads and validates a catalog file.
func Parse(b []byte) (*Catalog, error) {
	var c Catalog
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, errkind.Wrap(errkind.InvalidArgument, err, "reading image catalog")
	}
	if c.Version != FormatVersion {
		return nil, errkind.New(errkind.InvalidArgument, "image catalog format version %d, this banger reads %d", c.Version, FormatVersion)
	}
	if c.BaseURL != "" {
		if err := checkBaseURL(c.BaseURL); err != nil {
			return nil, err
		}
	}
	seen := map[string]bool{}
	for _, im := range c.Images {
		if err := im.validate(); err != nil {
			return nil, err
		}
		if seen[im.Name] {
			return nil, errkind.New(errkind.InvalidArgument, "image catalog lists %s twice", im.Name)
		}
		seen[im.Name] = true
	}
	if c.Default != "" && !seen[c.Default] {
		return nil, errkind.New(errkind.InvalidArgument, "image catalog default %q is not listed", c.Default)
	}
	return &c, nil
}

func checkBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errkind.New(errkind.InvalidArgument, "catalog base URL %q: want an http(s) URL", s)
	}
	return nil
}

func (im Image) validate() error {
	bad := func(format string, args ...any) error {
		return errkind.New(errkind.InvalidArgument, "image catalog entry %q: %s", im.Name, fmt.Sprintf(format, args...))
	}
	if err := model.ValidateImageName("catalog image", im.Name); err != nil {
		return err
	}
	if im.Arch != DefaultArch {
		return bad("arch %q: banger runs %s guests only", im.Arch, DefaultArch)
	}
	if im.KernelRef != "" {
		if err := kernel.ValidateName(im.KernelRef); err != nil {
			return bad("kernel_ref: %v", err)
		}
	}
	switch {
	case im.Bundle != "":
		if !hexRE.MatchString(im.SHA256) {
			return bad("sha256 %q is not 64 lower-case hex digits", im.SHA256)
		}
		if im.Size <= 0 {
			return bad("a bundle needs its size")
		}
		file := im.Bundle
		if strings.Contains(file, "://") {
			u, err := url.Parse(file)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
				return bad("bundle URL %q: want http(s)", im.Bundle)
			}
			file = u.Path[strings.LastIndex(u.Path, "/")+1:]
		} else if strings.Contains(file, "/") {
			return bad("bundle %q: a relative bundle is a plain file name", im.Bundle)
		}
		if want := BundleName(im.Name, im.Arch, im.SHA256); file != want {
			return bad("bundle file %q is not content-addressed: want %s", file, want)
		}
	case im.OCIRef != "":
	default:
		return bad("needs a bundle or an oci_ref")
	}
	return nil
}

// Merge returns c with the images of over added (replacing same-named
// ones), and over's base URL and default when set.
func (c *Catalog) Merge(over *Catalog) *Catalog {
	out := &Catalog{Version: c.Version, BaseURL: c.BaseURL, Default: c.Default, Images: slices.Clone(c.Images)}
	if over.BaseURL != "" {
		out.BaseURL = over.BaseURL
	}
	if over.Default != "" {
		out.Default = over.Default
	}
	for _, im := range over.Images {
		if i := slices.IndexFunc(out.Images, func(e Image) bool { return e.Name == im.Name }); i >= 0 {
			out.Images[i] = im
		} else {
			out.Images = append(out.Images, im)
		}
	}
	return out
}

// Options select the catalog a daemon uses.
type Options struct {
	// File is a catalog file merged over the embedded catalog (config key
	// image_catalog); empty for none.
	File string
	// BaseURL overrides the catalog's base URL (config key catalog_url).
	BaseURL string
}

// Load returns the embedded catalog with opts applied.
func Load(opts Options) (*Catalog, error) {
	c, err := Embedded()
	if err != nil {
		return nil, err
	}
	if opts.File != "" {
		b, err := os.ReadFile(opts.File)
		if err != nil {
			return nil, fmt.Errorf("reading image catalog %s: %w", opts.File, err)
		}
		over, err := Parse(b)
		if err != nil {
			return nil, fmt.Errorf("image catalog %s: %w", opts.File, err)
		}
		c = c.Merge(over)
	}
	if opts.BaseURL != "" {
		if err := checkBaseURL(opts.BaseURL); err != nil {
			return nil, err
		}
		c.BaseURL = opts.BaseURL
	}
	return c, nil
}

// Names lists the catalog's image names in catalog order.
func (c *Catalog) Names() []string {
	out := make([]string, 0, len(c.Images))
	for _, im := range c.Images {
		out = append(out, im.Name)
	}
	return out
}

// Lookup returns the entry called name. An unknown name is NotFound and,
// when a listed name is close, the error says which.
func (c *Catalog) Lookup(name string) (Image, error) {
	for _, im := range c.Images {
		if im.Name == name {
			return im, nil
		}
	}
	err := errkind.New(errkind.NotFound, "image %q is not in the catalog", name)
	if s := Closest(name, c.Names()); s != "" {
		return Image{}, errkind.WithHint(err, fmt.Sprintf("did you mean %s? (see `banger image list --available`)", s))
	}
	return Image{}, errkind.WithHint(err, "see `banger image list --available`")
}

// BundleURL is where the bundle of im is fetched from.
func (c *Catalog) BundleURL(im Image) (string, error) {
	if im.Bundle == "" {
		return "", errkind.New(errkind.InvalidArgument, "catalog image %q has no bundle", im.Name)
	}
	if strings.Contains(im.Bundle, "://") {
		return im.Bundle, nil
	}
	if c.BaseURL == "" {
		return "", errkind.WithHint(errkind.New(errkind.Unavailable, "catalog image %q: no catalog base URL is configured", im.Name),
			"set catalog_url in banger's config.toml to where the bundles are served")
	}
	return strings.TrimRight(c.BaseURL, "/") + "/" + im.Bundle, nil
}

// Resolution is what `image pull REF` does: fetch a catalog bundle, or pull
// an OCI reference (for a catalog entry without bundle, or a ref that is
// not a catalog name).
type Resolution struct {
	// Image is the catalog entry, nil when REF is not a catalog name.
	Image *Image
	// BundleURL is set when the catalog bundle is to be fetched.
	BundleURL string
	// OCIRef is the reference to pull otherwise.
	OCIRef string
}

// Resolve decides how to pull ref: catalog names first, else an OCI
// reference. A bare name (no registry, tag or digest) close to a catalog
// name but not one is refused with a suggestion rather than sent to a
// registry; other refs fall through to the OCI path.
func (c *Catalog) Resolve(ref string) (Resolution, error) {
	for i := range c.Images {
		im := c.Images[i]
		if im.Name != ref {
			continue
		}
		if im.Bundle == "" {
			return Resolution{Image: &im, OCIRef: im.OCIRef}, nil
		}
		u, err := c.BundleURL(im)
		if err != nil {
			// A pinned bundle nobody serves yet (no base URL) falls back
			// to the entry's OCI reference, when it has one.
			if im.OCIRef != "" && errors.Is(err, errkind.Unavailable) {
				return Resolution{Image: &im, OCIRef: im.OCIRef}, nil
			}
			return Resolution{}, err
		}
		return Resolution{Image: &im, BundleURL: u}, nil
	}
	if !strings.ContainsAny(ref, "/:@") {
		if s := Closest(ref, c.Names()); s != "" {
			return Resolution{}, errkind.WithHint(errkind.New(errkind.NotFound, "image %q is not in the catalog", ref),
				fmt.Sprintf("did you mean %s? (or give a full OCI reference such as docker.io/library/%s:latest)", s, ref))
		}
	}
	return Resolution{OCIRef: ref}, nil
}

// Closest returns the name nearest to s by edit distance when it is near
// enough to be a likely typo (at most a third of the longer name's length,
// and at most 4 edits), or "".
func Closest(s string, names []string) string {
	best, bestD := "", 0
	for _, n := range names {
		d := distance(s, n)
		limit := min(max(len(s), len(n))/3, 4)
		if d > limit || d == 0 {
			continue
		}
		if best == "" || d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// distance is the Levenshtein distance with transpositions counted as one
// edit (optimal string alignment).
func distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}

// Kernels is the kernel catalog images refer to (internal/kernel's).
func Kernels() ([]kernel.CatalogEntry, error) {
	return kernel.Catalog()
}

// Available is one row of `banger image list --available` (the wire type of
// GET /v1/catalog/images).
type Available struct {
	Image
	// Default marks the image `vm run` uses without --image.
	Default bool `json:"default,omitempty"`
	// Installed reports that a local image of that name exists.
	Installed bool `json:"installed"`
	// Source is where a pull gets it: the bundle URL or the OCI reference.
	Source string `json:"source"`
}

// BundleRequest asks the daemon to write the bundle of a local image (the
// wire type of POST /v1/images/{name}/bundle).
type BundleRequest struct {
	// OutDir is the absolute directory the bundle file is written to.
	OutDir string `json:"out_dir"`
	// Distro overrides the distro recorded in the manifest (default: from
	// the image's /etc/os-release).
	Distro string `json:"distro,omitempty"`
}
