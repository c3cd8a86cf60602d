// Package srv locates the servers of a remote XMPP domain for a
// server-to-server (S2S) connection.
//
// Before an XMPP server can federate with a peer domain D it must find where
// D's S2S service listens. RFC 6120 §3.2 says: look up the DNS SRV records
// _xmpp-server._tcp.D (RFC 2782), and XEP-0368 adds _xmpps-server._tcp.D for
// servers that speak TLS from the first byte ("direct TLS"). Both answers are
// merged into one candidate list ordered by priority and weight as RFC 2782
// prescribes. When D publishes no SRV records at all, the fallback is D itself
// on port 5269; a record whose target is "." means "this service is
// deliberately not offered" and forbids that fallback.
//
// [Resolver] implements that procedure with its own DNS client (built on
// github.com/miekg/dns) instead of the system resolver, so that it sees raw
// records, can merge the two services, can honour administrator-configured
// static routes (Cisco Expressway's "Use static routes") and can report why a
// lookup failed in words an administrator understands. Answers are cached for
// their TTL; the RFC 2782 shuffle is redone on every lookup so that load still
// spreads across equally weighted servers. [Order] exposes the ordering
// algorithm as a pure, deterministic function of its random draws, and
// [Resolver.LookupAddrs] resolves the chosen targets to addresses through the
// same nameservers and cache.
//
// Package srvtest provides an in-process authoritative DNS server for testing
// code that uses this package.
package srv
