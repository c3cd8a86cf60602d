package tlsmode_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"mellium.im/xmpp/stream"

	"github.com/xmppfed/xmppfed/tlsmode"
)

func TestPeerString(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "no STARTTLS", tlsmode.PeerNoTLS.String())
	assert.Equal(t, "STARTTLS optional", tlsmode.PeerOptional.String())
	assert.Equal(t, "STARTTLS required", tlsmode.PeerRequired.String())
	assert.Equal(t, "Peer(3)", tlsmode.Peer(3).String())
}

// TestDecide is the full local mode × peer behaviour matrix of the spec
// (§6.1/§6.2).
func TestDecide(t *testing.T) {
	t.Parallel()
	const plain, useTLS = false, true
	for _, tc := range []struct {
		local     tlsmode.Mode
		peer      tlsmode.Peer
		useTLS    bool
		condition *stream.Error // nil: accepted
		sentinel  error
		hint      string
	}{
		{tlsmode.NoTLS, tlsmode.PeerNoTLS, plain, nil, nil, ""},
		{tlsmode.NoTLS, tlsmode.PeerOptional, plain, nil, nil, ""}, // No TLS never starts TLS
		{tlsmode.NoTLS, tlsmode.PeerRequired, plain, &stream.UnsupportedFeature, tlsmode.ErrPeerRequiresTLS,
			"security mode is No TLS but the peer requires TLS"},
		{tlsmode.Optional, tlsmode.PeerNoTLS, plain, nil, nil, ""},
		{tlsmode.Optional, tlsmode.PeerOptional, useTLS, nil, nil, ""},
		{tlsmode.Optional, tlsmode.PeerRequired, useTLS, nil, nil, ""},
		{tlsmode.Required, tlsmode.PeerNoTLS, plain, &stream.PolicyViolation, tlsmode.ErrTLSRequired,
			"security mode is TLS required but the peer does not support STARTTLS"},
		{tlsmode.Required, tlsmode.PeerOptional, useTLS, nil, nil, ""},
		{tlsmode.Required, tlsmode.PeerRequired, useTLS, nil, nil, ""},
	} {
		t.Run(tc.local.String()+"/"+tc.peer.String(), func(t *testing.T) {
			t.Parallel()
			got, err := tlsmode.Decide(tc.local, tc.peer)
			assert.Equal(t, tc.useTLS, got)
			if tc.condition == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)

			var pe *tlsmode.PolicyError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, tc.local, pe.Local)
			assert.Equal(t, tc.peer, pe.Peer)
			assert.Equal(t, tc.condition.Err, pe.Condition.Err)

			assert.ErrorIs(t, err, *tc.condition)
			assert.ErrorIs(t, err, tc.sentinel)
			for _, other := range []error{stream.PolicyViolation, stream.UnsupportedFeature, stream.NotAuthorized,
				tlsmode.ErrTLSRequired, tlsmode.ErrPeerRequiresTLS, tlsmode.ErrUnknownMode} {
				if !errors.Is(other, *tc.condition) && other != tc.sentinel {
					assert.NotErrorIs(t, err, other)
				}
			}

			// The condition can be pulled out to write the stream error.
			var cond stream.Error
			require.ErrorAs(t, err, &cond)
			assert.Equal(t, tc.condition.Err, cond.Err)

			assert.Contains(t, err.Error(), tc.hint)
			assert.Contains(t, err.Error(), "security mode to TLS optional")
		})
	}
}

func TestDecideInvalid(t *testing.T) {
	t.Parallel()
	// An invalid mode behaves like Required.
	for _, peer := range []tlsmode.Peer{tlsmode.PeerNoTLS, tlsmode.PeerOptional, tlsmode.PeerRequired} {
		want, wantErr := tlsmode.Decide(tlsmode.Required, peer)
		got, err := tlsmode.Decide(tlsmode.Mode(200), peer)
		assert.Equal(t, want, got, peer)
		assert.Equal(t, wantErr != nil, err != nil, peer)
	}
	_, err := tlsmode.Decide(tlsmode.Mode(200), tlsmode.PeerNoTLS)
	assert.ErrorIs(t, err, stream.PolicyViolation)

	// An invalid peer is refused outright, never plaintext-by-accident.
	for _, mode := range []tlsmode.Mode{tlsmode.NoTLS, tlsmode.Optional, tlsmode.Required} {
		useTLS, err := tlsmode.Decide(mode, tlsmode.Peer(3))
		assert.False(t, useTLS)
		require.Error(t, err)
		var pe *tlsmode.PolicyError
		assert.False(t, errors.As(err, &pe))
	}
}

func TestPolicyErrorOtherCondition(t *testing.T) {
	t.Parallel()
	err := &tlsmode.PolicyError{Local: tlsmode.Required, Peer: tlsmode.PeerNoTLS, Condition: stream.UnsupportedVersion}
	assert.ErrorIs(t, err, stream.UnsupportedVersion)
	assert.NotErrorIs(t, err, tlsmode.ErrTLSRequired)
	assert.Contains(t, err.Error(), "unsupported-version")
}
