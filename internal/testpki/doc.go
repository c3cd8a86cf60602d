// Package testpki makes throw-away X.509 certificates for tests: an in-memory
// certificate authority with optional intermediates, leaf certificates it
// signs (with XMPP's SRV-ID and XmppAddr names if asked) and self-signed
// certificates, all generated at run time (ECDSA P-256) so that no key
// material is checked in and nothing ever expires in the repository.
//
// Every function takes a testing.TB and fails the test on error, because the
// only possible errors come from the random source or the x509 encoder.
// Nothing here is safe for production use: keys are short-lived and never
// protected.
package testpki
