// Package logkey names the log/slog attribute keys used across xmppfed, so
// that an operator can grep one spelling for a domain, a stream or a state
// change whichever package logged it.
package logkey
