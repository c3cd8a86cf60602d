// Package prosodytest starts real Prosody XMPP servers on loopback for this
// project's interoperability tests, and logs in to them as a user.
//
// A [Server] is one Prosody 0.12 process (Debian's package) with its own
// configuration, data, pidfile and log in the test's temporary directory,
// listening only on one loopback address such as 127.23.4.5, so that many
// instances, and the Go servers they federate with, can all use port 5269
// side by side without touching a system-wide Prosody. It acts as an S2S
// peer (RFC 6120 server-to-server streams with XEP-0220 dialback over plain
// TCP, with STARTTLS required, or SASL EXTERNAL with certificates from a
// CA), serves c2s users, and accepts XEP-0114 external components. Prosody's
// outbound S2S never uses the machine's DNS: it finds peers through a hosts
// file of its own ([Config.Resolve]; peers then listen on 5269) or asks a
// nameserver the test runs on any port ([Config.Nameserver], e.g. an
// srv/srvtest server whose SRV records may name any port).
//
// [Client] is a minimal c2s client (SASL PLAIN over plain TCP, resource
// binding, initial presence) that sends raw stanzas and receives every
// top-level element in order, fast enough for thousands of messages.
// [Server.Log], [Server.WaitLog] and [Server.Shell] (Prosody's admin shell,
// e.g. s2s:show() for each link's TLS and authentication state) let tests
// check what Prosody made of a peer. [Require] skips a test when Prosody is
// not installed, except in CI (CI=true), where interop tests must run and it
// fails instead.
package prosodytest
