package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/errkind"
)

func TestLoadMissingFileGivesDefaults(t *testing.T) {
	cfg, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DefaultVMM != "qemu" || cfg.LogLevel != "info" {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		{name: "empty", in: "", check: func(t *testing.T, c Config) {
			if c.Network.Bridge != "banger0" {
				t.Errorf("bridge = %q", c.Network.Bridge)
			}
		}},
		{name: "values", in: "log_level = \"debug\"\nfirecracker_bin = \"/opt/fc\"\n[vm_defaults]\ncpus = 4\nmemory_mib = 2048\n", check: func(t *testing.T, c Config) {
			if c.LogLevel != "debug" || c.FirecrackerBin != "/opt/fc" || c.VMDefaults.CPUs != 4 || c.VMDefaults.MemoryMiB != 2048 {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "unknown top key", in: "log_levle = \"debug\"\n", wantErr: "unknown key log_levle"},
		{name: "unknown nested key", in: "[vm_defaults]\ncpu = 2\n", wantErr: "unknown key vm_defaults.cpu"},
		{name: "bad level", in: "log_level = \"loud\"\n", wantErr: "log_level \"loud\""},
		{name: "bad vmm", in: "default_vmm = \"xen\"\n", wantErr: "default_vmm"},
		{name: "syntax", in: "log_level = \n", wantErr: "line 1"},
		{name: "wrong type", in: "[vm_defaults]\ncpus = \"two\"\n", wantErr: "line 2"},
		{name: "network defaults", in: "", check: func(t *testing.T, c Config) {
			n := c.Network
			if n.CIDR != "172.30.0.0/24" || n.DefaultMode != "nat" || n.DNSListen != "127.0.0.1:42069" || n.TapPool != 2 || n.Disabled || !n.ForwardDirect {
				t.Errorf("network defaults: %+v", n)
			}
		}},
		{name: "network values", in: "[network]\nbridge = \"bgx\"\ncidr = \"10.44.0.0/24\"\ndefault_mode = \"private\"\ndns_listen = \"\"\nupstream_dns = [\"127.0.0.1:5300\", \"9.9.9.9\"]\ntap_pool = 0\ndisabled = true\nforward_direct = false\n", check: func(t *testing.T, c Config) {
			n := c.Network
			if n.Bridge != "bgx" || n.CIDR != "10.44.0.0/24" || n.DefaultMode != "private" || n.DNSListen != "" || len(n.UpstreamDNS) != 2 || n.TapPool != 0 || !n.Disabled || n.ForwardDirect {
				t.Errorf("network: %+v", n)
			}
		}},
		{name: "long bridge", in: "[network]\nbridge = \"bangerbridge0\"\n", wantErr: "network.bridge"},
		{name: "bad cidr", in: "[network]\ncidr = \"172.30.0.0/31\"\n", wantErr: "network.cidr"},
		{name: "v6 cidr", in: "[network]\ncidr = \"fd00::/64\"\n", wantErr: "network.cidr"},
		{name: "bad mode", in: "[network]\ndefault_mode = \"bridge\"\n", wantErr: "network.default_mode"},
		{name: "bad dns listen", in: "[network]\ndns_listen = \"localhost:53\"\n", wantErr: "network.dns_listen"},
		{name: "bad upstream", in: "[network]\nupstream_dns = [\"dns.google\"]\n", wantErr: "network.upstream_dns"},
		{name: "bad pool", in: "[network]\ntap_pool = 100\n", wantErr: "network.tap_pool"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			err := Parse([]byte(tt.in), &c)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestLoadMalformedIsInvalidArgument(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte("bogus = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if !errors.Is(err, errkind.InvalidArgument) || !strings.Contains(err.Error(), p) {
		t.Fatalf("err = %v", err)
	}
}

func TestCatalogKeys(t *testing.T) {
	c := Default()
	if err := Parse([]byte("catalog_url = \"http://127.0.0.1:8080/bundles\"\nimage_catalog = \"/etc/banger/images.json\"\n"), &c); err != nil {
		t.Fatal(err)
	}
	if c.CatalogURL != "http://127.0.0.1:8080/bundles" || c.ImageCatalog != "/etc/banger/images.json" {
		t.Fatalf("got %+v", c)
	}
	for in, want := range map[string]string{
		"catalog_url = \"ftp://x/y\"\n":          "catalog_url \"ftp://x/y\": want an http(s) URL",
		"catalog_url = \"images.example\"\n":     "catalog_url",
		"image_catalog = \"rel/catalog.json\"\n": "image_catalog \"rel/catalog.json\": want an absolute path",
	} {
		c := Default()
		if err := Parse([]byte(in), &c); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", in, err, want)
		}
	}
}
