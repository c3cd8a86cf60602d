package main

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The demo is the README's first command: it must keep working and keep
// showing what it claims to show.
func TestDemo(t *testing.T) {
	var out, logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	require.NoError(t, run(t.Context(), log, &out))

	assert.Contains(t, out.String(), "edge.example     → method=SRV cached=false targets=[vcse1.edge.example:5270 (direct TLS)")
	assert.Contains(t, out.String(), "edge.example     → method=SRV cached=true")
	assert.Contains(t, out.String(), "partner.example  → method=fallback")
	assert.Contains(t, out.String(), "münchen.example  → method=SRV cached=false targets=[xmpp.xn--mnchen-3ya.example:5269]")
	assert.Contains(t, out.String(), "cisco.example    → method=static cached=false targets=[127.0.0.31:5269 127.0.0.32:5269]")
	assert.Contains(t, out.String(), "closed.example   → refused")
	assert.Regexp(t, `TLS required +refuse <policy-violation/> +TLS +TLS`, out.String())
	assert.Regexp(t, `No TLS +plaintext +plaintext +refuse <unsupported-feature/>`, out.String())
	assert.Contains(t, out.String(), "authorized by dialback; a forged key was refused")

	assert.Regexp(t, `capulet.example +→ montague.example +CONNECTED +tls=TLS 1.3 +auth=sasl-external`, out.String())
	assert.Regexp(t, `verona.example +→ montague.example +CONNECTED +tls=none +auth=dialback`, out.String())
	assert.Contains(t, out.String(), "montague.example received from juliet@verona.example/balcony: <message type='chat'")
	assert.Contains(t, out.String(), "impostor of verona.example refused")
	assert.Contains(t, out.String(), "mantua.example Handler got: <message type='chat' id='m1' from='juliet@rome.example/balcony'")
	assert.Contains(t, out.String(), "rome.example Handler got:   <message type='chat' id='m2' from='romeo@mantua.example'")
	assert.Contains(t, out.String(), "ping to mantua.example answered by its Server: <iq type='result' from='mantua.example' to='juliet@rome.example/balcony' id='ping1'>")
	assert.Contains(t, out.String(), "id='m3'><error type='cancel' by='rome.example'><remote-server-not-found")
	assert.Contains(t, out.String(), "id='m4'><error type='cancel' by='rome.example'><service-unavailable")
	assert.Regexp(t, `outbound +mantua.example +CONNECTED +TLS 1.3 +sasl-external +0 +1\n`, out.String())
	assert.Contains(t, out.String(), "bounced=[remote-server-not-found:1 service-unavailable:1]")
	assert.Contains(t, logs.String(), `msg="Connection state change"`)
	assert.Contains(t, logs.String(), `Scheduling dialback timeout in 30 seconds`)

	assert.Contains(t, logs.String(), `msg=resolved domain=edge.example puny=edge.example method=SRV dns-timings="(TOTAL:`)
	assert.Contains(t, logs.String(), `type=\"valid\"></db:verify>`)
	assert.Contains(t, logs.String(), `level=WARN msg="dialback key refused: possible spoofing"`)
}
