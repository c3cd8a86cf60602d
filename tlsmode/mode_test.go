package tlsmode_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/xmppfed/xmppfed/tlsmode"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestZeroValueIsRequired(t *testing.T) {
	t.Parallel()
	var m tlsmode.Mode
	assert.Equal(t, tlsmode.Required, m)
}

func TestModeString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode tlsmode.Mode
		want string
	}{
		{tlsmode.NoTLS, "No TLS"},
		{tlsmode.Optional, "TLS optional"},
		{tlsmode.Required, "TLS required"},
		{tlsmode.Mode(7), "Mode(7)"},
		{tlsmode.Mode(255), "Mode(255)"},
	} {
		assert.Equal(t, tc.want, tc.mode.String())
	}
}

func TestOffer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode            tlsmode.Mode
		offer, required bool
	}{
		{tlsmode.NoTLS, false, false},
		{tlsmode.Optional, true, false},
		{tlsmode.Required, true, true},
		{tlsmode.Mode(9), true, true}, // invalid fails closed
	} {
		offer, required := tc.mode.Offer()
		assert.Equal(t, tc.offer, offer, tc.mode)
		assert.Equal(t, tc.required, required, tc.mode)
	}
}

func TestParseMode(t *testing.T) {
	t.Parallel()
	accept := map[tlsmode.Mode][]string{
		tlsmode.NoTLS: {
			"No TLS", "no tls", "NO TLS", "nO tLs", "  No TLS\t\n",
			"No  TLS", "No\tTLS", // inner white space is folded
			"none", "NONE", "None", " none ", "off", "OFF", "Off",
		},
		tlsmode.Optional: {
			"TLS optional", "tls optional", "TLS OPTIONAL", "Tls Optional", "\tTLS   optional ",
			"optional", "OPTIONAL", "Optional", "\u00a0optional\u00a0", // NBSP is white space too
		},
		tlsmode.Required: {
			"TLS required", "tls required", "TLS REQUIRED", " TLS required\r\n",
			"required", "REQUIRED", "Required", "reQuired",
		},
	}
	for want, spellings := range accept {
		for _, s := range spellings {
			got, err := tlsmode.ParseMode(s)
			require.NoError(t, err, "%q", s)
			assert.Equal(t, want, got, "%q", s)
		}
	}

	for _, s := range []string{
		"", "   ", "tls", "TLS", "no", "on", "true", "false", "0", "1",
		"required!", "require", "requried", "TLS-required", "TLS_required", "tlsrequired",
		"NoTLS", "no-tls", "TLS optional please", "optional required",
		"TLS ſrequired", "No TLſ", // U+017F LATIN SMALL LETTER LONG S folds to s in Unicode, not in ASCII
		"\u212aeep", // KELVIN SIGN
		"required\x00",
	} {
		m, err := tlsmode.ParseMode(s)
		require.Error(t, err, "%q", s)
		assert.Equal(t, tlsmode.Required, m, "failed parse returns the zero value")
		assert.ErrorIs(t, err, tlsmode.ErrUnknownMode)
		var pe *tlsmode.ParseError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, s, pe.Input)
		msg := err.Error()
		for _, spelling := range []string{`"TLS required"`, `"required"`, `"TLS optional"`, `"optional"`, `"No TLS"`, `"none"`, `"off"`} {
			assert.Contains(t, msg, spelling)
		}
	}
}

func TestParseErrorTruncatesLongInput(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 1000)
	_, err := tlsmode.ParseMode(long)
	require.Error(t, err)
	msg := err.Error()
	assert.Less(t, len(msg), 400)
	assert.Contains(t, msg, "...")
	assert.NotContains(t, msg, `\x`, "cut on a rune boundary")
}

func TestTextRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode tlsmode.Mode
		text string
	}{
		{tlsmode.Required, "required"},
		{tlsmode.Optional, "optional"},
		{tlsmode.NoTLS, "none"},
	} {
		b, err := tc.mode.MarshalText()
		require.NoError(t, err)
		assert.Equal(t, tc.text, string(b))

		var m tlsmode.Mode = 42
		require.NoError(t, m.UnmarshalText(b))
		assert.Equal(t, tc.mode, m)

		// The long (Expressway) spelling is accepted too.
		m = 42
		require.NoError(t, m.UnmarshalText([]byte(tc.mode.String())))
		assert.Equal(t, tc.mode, m)
	}

	_, err := tlsmode.Mode(3).MarshalText()
	assert.ErrorIs(t, err, tlsmode.ErrUnknownMode)

	m := tlsmode.Optional
	err = m.UnmarshalText([]byte("bogus"))
	assert.ErrorIs(t, err, tlsmode.ErrUnknownMode)
	assert.Equal(t, tlsmode.Optional, m, "unchanged on error")
}

func TestJSONRoundTrip(t *testing.T) {
	t.Parallel()
	type domainConfig struct {
		Domain   string       `json:"domain"`
		Security tlsmode.Mode `json:"security"`
	}
	for _, mode := range []tlsmode.Mode{tlsmode.Required, tlsmode.Optional, tlsmode.NoTLS} {
		in := domainConfig{Domain: "b.test", Security: mode}
		b, err := json.Marshal(in)
		require.NoError(t, err)
		var out domainConfig
		require.NoError(t, json.Unmarshal(b, &out))
		assert.Equal(t, in, out)
	}

	b, err := json.Marshal(domainConfig{Domain: "b.test", Security: tlsmode.NoTLS})
	require.NoError(t, err)
	assert.JSONEq(t, `{"domain":"b.test","security":"none"}`, string(b))

	var cfg domainConfig
	require.NoError(t, json.Unmarshal([]byte(`{"security":"TLS optional"}`), &cfg))
	assert.Equal(t, tlsmode.Optional, cfg.Security)

	// Absent field: the zero value, Required.
	cfg = domainConfig{}
	require.NoError(t, json.Unmarshal([]byte(`{"domain":"c.test"}`), &cfg))
	assert.Equal(t, tlsmode.Required, cfg.Security)

	err = json.Unmarshal([]byte(`{"security":"maybe"}`), &cfg)
	assert.ErrorIs(t, err, tlsmode.ErrUnknownMode)

	_, err = json.Marshal(domainConfig{Security: tlsmode.Mode(5)})
	assert.True(t, errors.Is(err, tlsmode.ErrUnknownMode), "%v", err)
}

func FuzzParseMode(f *testing.F) {
	for _, s := range []string{
		"No TLS", "none", "off", "TLS optional", "optional", "TLS required", "required",
		"", " ", "tls", "No  TLS", "\tTLS\u00a0REQUIRED\n", "required!", "ſ", "\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := tlsmode.ParseMode(s)
		if err != nil {
			if !errors.Is(err, tlsmode.ErrUnknownMode) {
				t.Fatalf("ParseMode(%q) error %v does not match ErrUnknownMode", s, err)
			}
			_ = err.Error() // must not panic, whatever the input
			return
		}
		again, err := tlsmode.ParseMode(m.String())
		if err != nil || again != m {
			t.Fatalf("ParseMode(%q) = %v, but String %q parses as %v, %v", s, m, m.String(), again, err)
		}
		text, err := m.MarshalText()
		if err != nil {
			t.Fatalf("ParseMode(%q) = %v, which does not marshal: %v", s, m, err)
		}
		var back tlsmode.Mode
		if err := back.UnmarshalText(text); err != nil || back != m {
			t.Fatalf("ParseMode(%q) = %v, MarshalText %q unmarshals as %v, %v", s, m, text, back, err)
		}
	})
}
