package prosodytest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

// EncodePEM returns cert's chain and private key in PEM, for
// Host.CertPEM and Host.KeyPEM (e.g. from internal/testpki).
func EncodePEM(tb testing.TB, cert tls.Certificate) (certPEM, keyPEM []byte) {
	tb.Helper()
	for _, der := range cert.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		tb.Fatalf("prosodytest: encode private key: %v", err)
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// WriteCAFile writes the certificates as a PEM file in a temporary
// directory and returns its path, for Config.CAFile.
func WriteCAFile(tb testing.TB, cas ...*x509.Certificate) string {
	tb.Helper()
	var buf []byte
	for _, c := range cas {
		buf = append(buf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	path := filepath.Join(tb.TempDir(), "ca.pem")
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		tb.Fatalf("prosodytest: %v", err)
	}
	return path
}
