// Package srvtest runs an in-process authoritative DNS server for tests of
// code that locates XMPP servers with package srv, or anything else that
// speaks DNS to a configurable nameserver.
//
// Real DNS is neither available nor reproducible in tests, and a mocked
// resolver would not exercise the wire format, truncation, TCP fallback,
// retries or timeouts. A [Server] answers over UDP and TCP on one loopback
// port from a [Zone] written in RFC 1035 master-file syntax, with the
// semantics of an authoritative server (AA bit, NXDOMAIN versus NODATA,
// empty non-terminals, the SOA in negative answers, truncation of UDP
// answers larger than the client's buffer and of TCP answers larger than
// 64 KB). Faults such as SERVFAIL,
// REFUSED, a dropped query or a forced truncation can be injected per name
// and type, and a per-question counter lets tests assert that a cache kept a
// query off the wire. A Zone is also a [github.com/miekg/dns.Handler], to be
// mounted on a dns.Server or dns.ServeMux of one's own.
//
// Typical use:
//
//	s := srvtest.New(t, `_xmpp-server._tcp.a.test. 300 IN SRV 0 0 5269 xmpp.a.test.`)
//	r := s.Resolver() // a *srv.Resolver asking only s
//	targets, err := r.LookupServer(ctx, "a.test")
package srvtest
