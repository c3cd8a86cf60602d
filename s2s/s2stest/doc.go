// Package s2stest stands up federated XMPP domains inside one test: a test
// certificate authority, an in-process DNS server (srv/srvtest) publishing
// the _xmpp-server._tcp (and, on request, _xmpps-server._tcp) records of
// every domain, and for each domain an s2s.Server listening on loopback
// with its s2s.Pool. Stanzas delivered to a domain, and bounces returned to
// it, land in the domain's Inbox.
//
// A few lines give two domains exchanging messages over authenticated
// server-to-server streams:
//
//	n := s2stest.New(t)
//	a := n.AddDomain("a.example", s2stest.Options{})
//	b := n.AddDomain("b.example", s2stest.Options{})
//	a.Send(ctx, a.Message("alice@a.example", "bob@b.example", "hi"))
//	st := b.Inbox.Next(t, 5*time.Second)
//
// Every listener and DNS server binds to 127.0.0.1; everything is shut
// down when the test ends, and the log of every domain is printed if it
// failed. The package is for tests: it fails the test (testing.TB) on
// setup errors instead of returning them.
package s2stest
