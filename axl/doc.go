// Package axl is a client for AXL, the SOAP administration API of Cisco
// Unified CM and IM and Presence, limited to its SQL operations
// executeSQLQuery and executeSQLUpdate, which is how an Expressway-style
// core records the edge's server-to-server (S2S) components in IM and
// Presence's xmpps2snodes table.
//
// A [Client] posts SOAP 1.1 envelopes to https://<node>:8443/axl/ with the
// AXL namespace and the SOAPAction header ("CUCM:DB ver=12.5
// executeSQLQuery") of one schema version, HTTP basic authentication, TLS
// with a configurable tls.Config ([PinCertificates] for the self-signed
// certificate IM and Presence commonly presents), keep-alive connections,
// at most two requests in flight per Client (AXL throttles concurrent
// reads), and retries with back-off when AXL throttles (HTTP 503, or its
// "Maximum AXL Memory Allocation Consumed" fault). AXL has no bind
// parameters, so the arguments of [Client.Query] and [Client.Update] are
// written into the statement as Informix literals by [Literal]; the quoting
// rules, and the values refused, are documented there and at [Bind], and
// fuzz tests check that no string can end its literal early and that a
// bound statement does what SQLite's own bind parameters would.
//
// Failures are reported in terms a UC administrator acts on: wrong
// credentials ([ErrUnauthorized], the usual cause of one-way federation),
// a missing AXL role ([ErrForbidden]), a server that is not AXL
// ([ErrNotAXL]), certificate problems ([*TLSError]), timeouts
// ([ErrTimeout]), and SQL errors as a [*Fault] carrying AXL's code (the
// Informix error number). [Client.ListS2SNodes], [Client.EnsureS2SNode] and
// [Client.RemoveS2SNode] maintain xmpps2snodes.
//
// Package axltest provides an AXL server backed by SQLite for tests and
// for an IM and Presence stand-in.
package axl
