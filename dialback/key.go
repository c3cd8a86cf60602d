package dialback

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"hash"
	"io"
)

// MaxKeyLen is the longest key, in bytes after trimming surrounding
// whitespace, that this package accepts from a peer. Real keys are 40 or 64
// hex digits; the bound stops a peer from making us keep or hash large
// strings. It cannot stop encoding/xml from reading one oversized text token
// first: the stream layer bounds the size of every element it reads.
const MaxKeyLen = 1024

// A KeyAlgorithm derives and checks dialback keys for one secret.
type KeyAlgorithm interface {
	// Key returns the key that an initiating server sends to the receiving
	// domain for a stream whose response header carried streamID.
	Key(receiving, originating, streamID string) string
	// Verify reports whether key is right for the inputs, in constant time.
	Verify(key, receiving, originating, streamID string) bool
}

// Generator derives keys as XEP-0185 specifies:
//
//	hex(HMAC-H(key = hex(H(Secret)), message = receiving + " " + originating + " " + streamID))
//
// where the HMAC key is the lowercase hex string of the secret's digest, not
// the raw digest. The zero Hash is SHA-256 (XEP-0185). Cisco XCP peers use
// keys of 40 hex digits; sha1.New gives this HMAC-SHA-1 variant, which is
// what a mixed cluster of xmppfed and XCP nodes sharing a secret needs.
type Generator struct {
	Secret []byte           // the dialback secret shared by every node of a domain
	Hash   func() hash.Hash // nil means sha256.New (XEP-0185)
}

// Key returns the dialback key for the inputs. Domains are used exactly as
// they appear on the wire. An empty Secret yields keys anybody can compute;
// Verify refuses them.
func (g Generator) Key(receiving, originating, streamID string) string {
	var buf [128]byte
	return string(g.appendKey(buf[:0], receiving, originating, streamID))
}

// Verify reports whether key is the key for the inputs. Whitespace around
// the key (pretty-printing peers) is ignored; the comparison takes constant
// time. A Generator without a secret verifies nothing.
func (g Generator) Verify(key, receiving, originating, streamID string) bool {
	if len(g.Secret) == 0 {
		return false
	}
	var buf [128]byte
	return equalKey(g.appendKey(buf[:0], receiving, originating, streamID), key)
}

func (g Generator) appendKey(dst []byte, receiving, originating, streamID string) []byte {
	newHash := g.Hash
	if newHash == nil {
		newHash = sha256.New
	}
	var digest [64]byte
	h := newHash()
	h.Write(g.Secret)
	var hexKey [128]byte
	k := hex.AppendEncode(hexKey[:0], h.Sum(digest[:0]))

	mac := hmac.New(newHash, k)
	writeMessage(mac, receiving, originating, streamID)
	return hex.AppendEncode(dst, mac.Sum(digest[:0]))
}

// LegacyChain derives keys the way jabberd14 and jabberd2 did before
// XEP-0185 (hex SHA-1 digests chained over the secret, the receiving domain
// and the stream ID; the originating domain is not used). Only for verifying
// keys from such legacy nodes of one's own domain: it is weaker than
// Generator.
type LegacyChain struct {
	Secret []byte
}

// Key returns the legacy key for the inputs; originating is ignored.
func (l LegacyChain) Key(receiving, originating, streamID string) string {
	var buf [40]byte
	return string(l.appendKey(buf[:0], receiving, streamID))
}

// Verify reports, in constant time, whether key is the legacy key.
func (l LegacyChain) Verify(key, receiving, originating, streamID string) bool {
	if len(l.Secret) == 0 {
		return false
	}
	var buf [40]byte
	return equalKey(l.appendKey(buf[:0], receiving, streamID), key)
}

func (l LegacyChain) appendKey(dst []byte, receiving, streamID string) []byte {
	var sum [sha1.Size]byte
	var step [2 * sha1.Size]byte
	h := sha1.New()
	h.Write(l.Secret)
	hex.Encode(step[:], h.Sum(sum[:0]))
	for _, part := range [...]string{receiving, streamID} {
		h.Reset()
		h.Write(step[:])
		io.WriteString(h, part)
		hex.Encode(step[:], h.Sum(sum[:0]))
	}
	return append(dst, step[:]...)
}

// Keyring makes keys with its first algorithm and accepts keys made by any
// of them: during a secret rotation list the new secret first and keep the
// previous one for at least the longest dialback timeout, so that keys sent
// just before the change still verify.
type Keyring []KeyAlgorithm

// Key returns the key of the first algorithm, or "" for an empty Keyring.
func (k Keyring) Key(receiving, originating, streamID string) string {
	if len(k) == 0 {
		return ""
	}
	return k[0].Key(receiving, originating, streamID)
}

// Verify reports whether any algorithm accepts key.
func (k Keyring) Verify(key, receiving, originating, streamID string) bool {
	for _, alg := range k {
		if alg.Verify(key, receiving, originating, streamID) {
			return true
		}
	}
	return false
}

// NewSecret returns a fresh random dialback secret (256 bits as 64 hex
// digits), for deployments that do not configure one. Every node of a domain
// must then be given the same value.
func NewSecret() []byte {
	var raw [32]byte
	// crypto/rand.Read never fails (Go 1.24+): it crashes the program rather
	// than return weak randomness.
	_, _ = rand.Read(raw[:])
	return hex.AppendEncode(nil, raw[:])
}

func writeMessage(w io.Writer, receiving, originating, streamID string) {
	io.WriteString(w, receiving)
	io.WriteString(w, " ")
	io.WriteString(w, originating)
	io.WriteString(w, " ")
	io.WriteString(w, streamID)
}

// equalKey compares the expected key with a received one in constant time
// (for equal lengths), after trimming the XML whitespace a peer may put
// around it.
func equalKey(expected []byte, received string) bool {
	received = TrimKey(received)
	if len(received) > MaxKeyLen {
		return false
	}
	return subtle.ConstantTimeCompare(expected, []byte(received)) == 1
}

// TrimKey removes the XML whitespace (space, tab, CR, LF) around a key. It
// is the only normalisation dialback allows: keys are otherwise opaque, and
// a receiving server forwards them byte for byte.
func TrimKey(key string) string {
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
	for len(key) > 0 && isSpace(key[0]) {
		key = key[1:]
	}
	for len(key) > 0 && isSpace(key[len(key)-1]) {
		key = key[:len(key)-1]
	}
	return key
}
