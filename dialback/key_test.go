package dialback

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type keyVector struct {
	Name            string `json:"name"`
	Secret          string `json:"secret"`
	Receiving       string `json:"receiving"`
	Originating     string `json:"originating"`
	StreamID        string `json:"stream_id"`
	SHA256          string `json:"sha256"`
	SHA1            string `json:"sha1"`
	LegacySHA1Chain string `json:"legacy_sha1_chain"`
}

type keyFile struct {
	Vectors  []keyVector       `json:"vectors"`
	Negative map[string]string `json:"negative_row1"`
}

func loadKeys(t *testing.T) keyFile {
	t.Helper()
	data, err := os.ReadFile("testdata/keys.json")
	require.NoError(t, err)
	var f keyFile
	require.NoError(t, json.Unmarshal(data, &f))
	require.Len(t, f.Vectors, 7)
	return f
}

func TestKeyVectors(t *testing.T) {
	for _, v := range loadKeys(t).Vectors {
		algs := []struct {
			name string
			alg  KeyAlgorithm
			want string
		}{
			{"xep0185-hmac-sha256", Generator{Secret: []byte(v.Secret)}, v.SHA256},
			{"explicit sha256", Generator{Secret: []byte(v.Secret), Hash: sha256.New}, v.SHA256},
			{"hmac-sha1", Generator{Secret: []byte(v.Secret), Hash: sha1.New}, v.SHA1},
			{"legacy-sha1-chain", LegacyChain{Secret: []byte(v.Secret)}, v.LegacySHA1Chain},
		}
		for _, a := range algs {
			t.Run(v.Name+"/"+a.name, func(t *testing.T) {
				got := a.alg.Key(v.Receiving, v.Originating, v.StreamID)
				assert.Equal(t, a.want, got)
				assert.True(t, a.alg.Verify(a.want, v.Receiving, v.Originating, v.StreamID))
				assert.True(t, a.alg.Verify("\n  "+a.want+"\t\r\n", v.Receiving, v.Originating, v.StreamID), "surrounding XML whitespace is ignored")
				assert.False(t, a.alg.Verify(strings.ToUpper(a.want), v.Receiving, v.Originating, v.StreamID), "keys are compared exactly")
				assert.False(t, a.alg.Verify(a.want, v.Receiving, v.Originating, v.StreamID+"0"), "other stream ID")
				assert.False(t, a.alg.Verify(a.want[:len(a.want)-1], v.Receiving, v.Originating, v.StreamID), "truncated key")
				assert.False(t, a.alg.Verify("", v.Receiving, v.Originating, v.StreamID))
			})
		}
	}
}

func TestKeyLengths(t *testing.T) {
	assert.Len(t, Generator{Secret: []byte("s")}.Key("a", "b", "c"), 64)
	assert.Len(t, Generator{Secret: []byte("s"), Hash: sha1.New}.Key("a", "b", "c"), 40, "Cisco XCP keys are 40 hex digits")
	assert.Len(t, LegacyChain{Secret: []byte("s")}.Key("a", "b", "c"), 40)
}

// The mistakes of dialback.md §3.4: a correct implementation produces none.
func TestKeyNegativeVectors(t *testing.T) {
	f := loadKeys(t)
	require.Len(t, f.Negative, 5)
	v := f.Vectors[0]
	g := Generator{Secret: []byte(v.Secret)}
	outputs := []string{
		g.Key(v.Receiving, v.Originating, v.StreamID),
		Generator{Secret: []byte(v.Secret), Hash: sha1.New}.Key(v.Receiving, v.Originating, v.StreamID),
		LegacyChain{Secret: []byte(v.Secret)}.Key(v.Receiving, v.Originating, v.StreamID),
	}
	for name, wrong := range f.Negative {
		for _, out := range outputs {
			assert.NotEqual(t, wrong, out, name)
		}
		assert.False(t, g.Verify(wrong, v.Receiving, v.Originating, v.StreamID), name)
	}
	assert.Equal(t, f.Negative["swapped_domains"], g.Key(v.Originating, v.Receiving, v.StreamID),
		"argument order is receiving, originating")
}

func TestVerifyRefuses(t *testing.T) {
	good := Generator{Secret: []byte("s3cr3t")}
	key := good.Key("b.example", "a.example", "id1")
	tests := []struct {
		name string
		alg  KeyAlgorithm
		key  string
		recv string
		orig string
	}{
		{"wrong secret", Generator{Secret: []byte("other")}, key, "b.example", "a.example"},
		{"empty secret", Generator{}, Generator{}.Key("b.example", "a.example", "id1"), "b.example", "a.example"},
		{"empty legacy secret", LegacyChain{}, LegacyChain{}.Key("b.example", "a.example", "id1"), "b.example", "a.example"},
		{"other hash", Generator{Secret: []byte("s3cr3t"), Hash: sha1.New}, key, "b.example", "a.example"},
		{"swapped domains", good, key, "a.example", "b.example"},
		{"forged originating", good, key, "b.example", "evil.example"},
		{"oversized", good, key + strings.Repeat(" x", MaxKeyLen), "b.example", "a.example"},
		{"inner whitespace", good, key[:10] + " " + key[10:], "b.example", "a.example"},
		{"empty keyring", Keyring{}, key, "b.example", "a.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.False(t, tt.alg.Verify(tt.key, tt.recv, tt.orig, "id1"))
		})
	}
	assert.True(t, good.Verify(key, "b.example", "a.example", "id1"), "control")
}

func TestKeyring(t *testing.T) {
	oldSecret, newSecret := []byte("old-secret"), []byte("new-secret")
	ring := Keyring{Generator{Secret: newSecret}, Generator{Secret: oldSecret}, LegacyChain{Secret: oldSecret}}

	assert.Equal(t, Generator{Secret: newSecret}.Key("b", "a", "1"), ring.Key("b", "a", "1"), "keys come from the first algorithm")
	assert.True(t, ring.Verify(Generator{Secret: oldSecret}.Key("b", "a", "1"), "b", "a", "1"), "previous secret still accepted")
	assert.True(t, ring.Verify(LegacyChain{Secret: oldSecret}.Key("b", "a", "1"), "b", "a", "1"))
	assert.False(t, ring.Verify(Generator{Secret: []byte("third")}.Key("b", "a", "1"), "b", "a", "1"))
	assert.Empty(t, Keyring{}.Key("b", "a", "1"))
}

func TestNewSecret(t *testing.T) {
	a, b := NewSecret(), NewSecret()
	assert.Len(t, a, 64)
	assert.NotEqual(t, a, b)
	assert.Regexp(t, "^[0-9a-f]{64}$", string(a))
}

func TestTrimKey(t *testing.T) {
	tests := map[string]string{
		"":              "",
		"  \n":          "",
		"\tabc\r\n":     "abc",
		"a b":           "a b",
		"\u00a0abc":     "\u00a0abc", // not XML whitespace
		" \t\r\nx \t\r": "x",
	}
	for in, want := range tests {
		assert.Equal(t, want, TrimKey(in), "%q", in)
	}
}

func BenchmarkKey(b *testing.B) {
	for _, bc := range []struct {
		name string
		g    Generator
	}{{"sha256", Generator{Secret: []byte("s3cr3tf0rd14lb4ck")}}, {"sha1", Generator{Secret: []byte("s3cr3tf0rd14lb4ck"), Hash: sha1.New}}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = bc.g.Key("montague.example", "capulet.example", "D60000229F")
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	g := Generator{Secret: []byte("s3cr3tf0rd14lb4ck")}
	key := g.Key("montague.example", "capulet.example", "D60000229F")
	b.ReportAllocs()
	for b.Loop() {
		if !g.Verify(key, "montague.example", "capulet.example", "D60000229F") {
			b.Fatal("verify failed")
		}
	}
}
