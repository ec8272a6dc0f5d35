package config

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"

	"github.com/bangerdev/banger/internal/errkind"
)

// ReadCACerts reads a guest_ca_certs file: an absolute path to PEM data
// holding at least one CERTIFICATE block, each of which must parse as
// X.509. It returns the DER bytes of the certificates in file order (other
// PEM blocks, such as keys or comments, are ignored). Errors are
// InvalidArgument and name the file.
func ReadCACerts(path string) ([][]byte, error) {
	if !filepath.IsAbs(path) {
		return nil, errkind.New(errkind.InvalidArgument, "guest_ca_certs %q: want an absolute path", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, errkind.Wrap(errkind.InvalidArgument, err, "guest_ca_certs %s", path)
	}
	var ders [][]byte
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return nil, errkind.Wrap(errkind.InvalidArgument, err, "guest_ca_certs %s: certificate %d", path, len(ders)+1)
		}
		ders = append(ders, b.Bytes)
	}
	if len(ders) == 0 {
		return nil, errkind.New(errkind.InvalidArgument, "guest_ca_certs %s: no PEM CERTIFICATE block", path)
	}
	return ders, nil
}
