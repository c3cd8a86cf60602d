package xcp_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/internal/testpki"
	"github.com/xmppfed/xmppfed/xcp"
)

// TestTLSMutualAuth runs the link over TLS with certificates on both ends,
// in both dialling directions, and refuses peers without a trusted one.
func TestTLSMutualAuth(t *testing.T) {
	ca := testpki.NewCA(t)
	coreTLS := &tls.Config{
		Certificates: []tls.Certificate{ca.Leaf(t, "core.example")},
		ClientCAs:    ca.Pool(), // for components that dial in
		RootCAs:      ca.Pool(), // for components the router dials
	}
	edgeTLS := func(serverName string) *tls.Config {
		return &tls.Config{
			Certificates: []tls.Certificate{ca.Leaf(t, "edge.example")},
			RootCAs:      ca.Pool(),
			ClientCAs:    ca.Pool(),
			ServerName:   serverName,
		}
	}

	t.Run("components dial", func(t *testing.T) {
		addr := startRouter(t, &xcp.Router{Components: twoComponents(), TLSConfig: coreTLS})
		ha, hb := newCollector(), newCollector()
		a := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, Handler: ha, TLSConfig: edgeTLS("core.example")})
		b := startLink(t, &xcp.Link{Name: "b.example", Secret: secretB, Addr: addr, Handler: hb, TLSConfig: edgeTLS("core.example")})
		ready(t, a, b)
		exchange(t, a, b, ha, hb)
	})

	t.Run("router dials", func(t *testing.T) {
		ha, hb := newCollector(), newCollector()
		a := &xcp.Link{Name: "a.example", Secret: secretA, Handler: ha, TLSConfig: edgeTLS("")}
		b := &xcp.Link{Name: "b.example", Secret: secretB, Handler: hb, TLSConfig: edgeTLS("")}
		comps := twoComponents()
		comps[0].Addr, comps[1].Addr = serveLink(t, a), serveLink(t, b)
		cfg := coreTLS.Clone()
		cfg.ServerName = "edge.example" // the links listen on 127.0.0.1
		r := fastRouter(t, &xcp.Router{Components: comps, TLSConfig: cfg})
		require.NoError(t, r.Start())
		t.Cleanup(func() { require.NoError(t, r.Close()) })
		ready(t, a, b)
		exchange(t, a, b, ha, hb)
	})

	t.Run("no client certificate", func(t *testing.T) {
		r := &xcp.Router{Components: twoComponents(), TLSConfig: coreTLS}
		addr := startRouter(t, r)
		l := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr,
			TLSConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "core.example"}})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := l.Ready(ctx)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "certificate")
		assert.Empty(t, r.Routes())
	})

	t.Run("untrusted router", func(t *testing.T) {
		other := testpki.NewCA(t)
		addr := startRouter(t, &xcp.Router{Components: twoComponents(), TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{other.Leaf(t, "core.example")}, ClientCAs: ca.Pool(),
		}})
		l := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, TLSConfig: edgeTLS("core.example")})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := l.Ready(ctx)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "TLS certificate rejected")
	})
}

// TestRequireCertificateName: with RequireCertificateName, a component's
// certificate must name the component, in both dialling directions.
func TestRequireCertificateName(t *testing.T) {
	ca := testpki.NewCA(t)
	coreTLS := &tls.Config{
		Certificates: []tls.Certificate{ca.Leaf(t, "core.example")},
		ClientCAs:    ca.Pool(),
		RootCAs:      ca.Pool(),
	}
	linkTLS := func(names ...string) *tls.Config {
		return &tls.Config{
			Certificates: []tls.Certificate{ca.Leaf(t, names...)},
			RootCAs:      ca.Pool(),
			ClientCAs:    ca.Pool(),
			ServerName:   "core.example",
		}
	}

	t.Run("component dials", func(t *testing.T) {
		r := &xcp.Router{Components: twoComponents(), TLSConfig: coreTLS, RequireCertificateName: true}
		addr := startRouter(t, r)
		good := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, TLSConfig: linkTLS("edge.example", "a.example")})
		ready(t, good)
		bad := startLink(t, &xcp.Link{Name: "b.example", Secret: secretB, Addr: addr, TLSConfig: linkTLS("edge.example")})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := bad.Ready(ctx)
		require.ErrorIs(t, err, xcp.ErrNotAuthorized)
		assert.Contains(t, err.Error(), "does not name component")
	})

	t.Run("router dials", func(t *testing.T) {
		good := &xcp.Link{Name: "a.example", Secret: secretA, TLSConfig: linkTLS("edge.example", "a.example")}
		bad := &xcp.Link{Name: "b.example", Secret: secretB, TLSConfig: linkTLS("edge.example")}
		comps := twoComponents()
		comps[0].Addr, comps[1].Addr = serveLink(t, good), serveLink(t, bad)
		cfg := coreTLS.Clone()
		cfg.ServerName = "edge.example"
		logs := &syncBuffer{}
		r := fastRouter(t, &xcp.Router{Components: comps, TLSConfig: cfg, RequireCertificateName: true, Logger: newTextLogger(logs)})
		require.NoError(t, r.Start())
		t.Cleanup(func() { require.NoError(t, r.Close()) })
		ready(t, good)
		require.Eventually(t, func() bool {
			return strings.Contains(logs.String(), "b.example") && strings.Contains(logs.String(), "certificate")
		},
			5*time.Second, 10*time.Millisecond)
		assert.NotEqual(t, xcp.StateConnected, bad.State())
	})

	t.Run("needs TLS", func(t *testing.T) {
		r := &xcp.Router{Components: twoComponents(), Plaintext: true, RequireCertificateName: true}
		require.Error(t, r.Start())
		require.NoError(t, r.Close())
	})
}
