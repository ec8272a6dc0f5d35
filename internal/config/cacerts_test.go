package config

import (
	"bytes"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/testenv"
)

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestGuestCACerts(t *testing.T) {
	dir := t.TempDir()
	ca1, ca2 := testenv.NewCA(t, "one").DER, testenv.NewCA(t, "two").DER
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	single := write("corp.crt", pemOf("CERTIFICATE", ca1))
	// A bundle with text around the blocks and a key that is ignored.
	bundle := write("bundle.pem", bytes.Join([][]byte{
		[]byte("# corporate roots\n"), pemOf("CERTIFICATE", ca1), pemOf("PRIVATE KEY", []byte("not a key")),
		[]byte("subject=two\n"), pemOf("CERTIFICATE", ca2),
	}, nil))
	keyOnly := write("key.pem", pemOf("PRIVATE KEY", []byte("k")))
	garbage := write("garbage.crt", pemOf("CERTIFICATE", []byte("not DER")))
	empty := write("empty.crt", nil)
	missing := filepath.Join(dir, "missing.crt")
	unreadable := dir // a directory: reading it fails

	c := Default()
	if err := Parse([]byte("guest_ca_certs = [\""+single+"\", \""+bundle+"\"]\n"), &c); err != nil {
		t.Fatal(err)
	}
	if len(c.GuestCACerts) != 2 || c.GuestCACerts[0] != single || c.GuestCACerts[1] != bundle {
		t.Fatalf("guest_ca_certs = %q", c.GuestCACerts)
	}
	ders, err := ReadCACerts(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if len(ders) != 2 || !bytes.Equal(ders[0], ca1) || !bytes.Equal(ders[1], ca2) {
		t.Fatalf("bundle: got %d certificates, want ca1 then ca2", len(ders))
	}
	if d := Default(); len(d.GuestCACerts) != 0 {
		t.Fatalf("default guest_ca_certs = %q, want none", d.GuestCACerts)
	}

	for _, tc := range []struct{ path, want string }{
		{missing, "guest_ca_certs " + missing + ": open"},
		{unreadable, "guest_ca_certs " + unreadable + ": read"},
		{empty, "guest_ca_certs " + empty + ": no PEM CERTIFICATE block"},
		{keyOnly, "guest_ca_certs " + keyOnly + ": no PEM CERTIFICATE block"},
		{garbage, "guest_ca_certs " + garbage + ": certificate 1: x509"},
		{"rel/ca.crt", "guest_ca_certs \"rel/ca.crt\": want an absolute path"},
	} {
		c := Default()
		err := Parse([]byte("guest_ca_certs = [\""+single+"\", \""+tc.path+"\"]\n"), &c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want containing %q", tc.path, err, tc.want)
		}
		if _, err := ReadCACerts(tc.path); !errors.Is(err, errkind.InvalidArgument) {
			t.Errorf("%s: ReadCACerts err = %v, want invalid argument", tc.path, err)
		}
	}

	// Through Load the error is an invalid argument naming both files.
	cfgPath := write("config.toml", []byte("guest_ca_certs = [\""+keyOnly+"\"]\n"))
	_, err = Load(cfgPath)
	if !errors.Is(err, errkind.InvalidArgument) || !strings.Contains(err.Error(), cfgPath) || !strings.Contains(err.Error(), keyOnly) {
		t.Fatalf("Load: err = %v", err)
	}
}
