package kernel

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/kernel/apt"
)

// DefaultName is the catalog kernel banger uses when none is given.
const DefaultName = "debian-cloud"

// catalogVersion is the catalog format this code reads.
const catalogVersion = 1

//go:embed catalog.json
var catalogJSON []byte

// Source says where a catalog kernel comes from. Kind "apt": Package is
// downloaded with the host's apt configuration (`apt-get download`; meta
// packages are followed to the versioned linux-image package).
type Source struct {
	Kind    string `json:"kind"`
	Package string `json:"package,omitempty"`
}

func (s Source) String() string {
	switch s.Kind {
	case "apt":
		return "apt:" + s.Package
	}
	return s.Kind
}

// CatalogEntry is a kernel Pull knows how to fetch.
type CatalogEntry struct {
	Name        string `json:"name"`
	Version     string `json:"version"` // kernel series, e.g. "6.1"
	Description string `json:"description"`
	Source      Source `json:"source"`
}

type catalogFile struct {
	Version int            `json:"version"`
	Kernels []CatalogEntry `json:"kernels"`
}

// Catalog returns the embedded kernel catalog.
func Catalog() ([]CatalogEntry, error) {
	return parseCatalog(catalogJSON)
}

func parseCatalog(b []byte) ([]CatalogEntry, error) {
	var c catalogFile
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("reading kernel catalog: %w", err)
	}
	if c.Version != catalogVersion {
		return nil, fmt.Errorf("reading kernel catalog: format version %d, want %d", c.Version, catalogVersion)
	}
	seen := map[string]bool{}
	for _, e := range c.Kernels {
		if err := ValidateName(e.Name); err != nil {
			return nil, fmt.Errorf("reading kernel catalog: %w", err)
		}
		if seen[e.Name] {
			return nil, fmt.Errorf("reading kernel catalog: %s listed twice", e.Name)
		}
		seen[e.Name] = true
		if e.Source.Kind != "apt" || e.Source.Package == "" {
			return nil, fmt.Errorf("reading kernel catalog: %s: unsupported source %+v", e.Name, e.Source)
		}
	}
	return c.Kernels, nil
}

// Lookup returns the catalog entry called name.
func Lookup(name string) (CatalogEntry, error) {
	entries, err := Catalog()
	if err != nil {
		return CatalogEntry{}, err
	}
	for _, e := range entries {
		if e.Name == name {
			return e, nil
		}
	}
	return CatalogEntry{}, errkind.New(errkind.NotFound, "kernel %q is not in the catalog", name)
}

// Pull fetches the catalog kernel called name and imports it under that
// name. It fails with AlreadyExists when the store has it already.
func (s *Store) Pull(ctx context.Context, name string) (Kernel, error) {
	e, err := Lookup(name)
	if err != nil {
		return Kernel{}, err
	}
	if s.Exists(name) {
		return Kernel{}, errkind.New(errkind.AlreadyExists, "kernel %q already exists", name)
	}
	if !apt.Available() {
		return Kernel{}, errkind.WithHint(
			errkind.New(errkind.Unavailable, "pulling kernel %s: apt-get is not installed", name),
			"import a kernel from files instead: banger kernel import")
	}
	tmp, err := os.MkdirTemp(s.dir, ".pull-"+name+"-*"+".staging")
	if err != nil {
		return Kernel{}, fmt.Errorf("pulling kernel %s: %w", name, err)
	}
	defer os.RemoveAll(tmp)
	deb, err := apt.Download(ctx, tmp, e.Source.Package)
	if err != nil {
		return Kernel{}, fmt.Errorf("pulling kernel %s: %w", name, err)
	}
	return s.importDeb(ctx, name, deb, fmt.Sprintf("catalog:%s (%s, %s)", name, e.Source, filepath.Base(deb)))
}
