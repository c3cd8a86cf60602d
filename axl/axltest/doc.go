// Package axltest runs an AXL server for tests of code that uses package
// axl, and for the IM and Presence stand-in of the examples.
//
// A [Server] answers executeSQLQuery and executeSQLUpdate over HTTPS on
// loopback, like the AXL web service of an IM and Presence node: it checks
// HTTP basic authentication (401 otherwise), the SOAPAction header against
// the request's namespace version, and optionally the schema versions it
// supports (599 otherwise), and it runs the statements on a real SQL
// database, SQLite through the pure-Go modernc.org/sqlite, preloaded with
// the xmpps2snodes table. SQL errors come back as AXL faults with Informix
// error codes (-239 duplicate value, -201 syntax error, -206 unknown table,
// -217 unknown column, -391 NULL in a NOT NULL column). SQLite and Informix
// quote string literals the same way (single quotes, doubled inside), so a
// statement whose quoting is wrong fails or misbehaves here as it would on
// IM and Presence; and since SQLite executes every statement of a
// multi-statement text, an injected "; DROP TABLE" in an update would
// really run. Queries run read-only (an SQLite authorizer that allows
// reads only), so executeSQLQuery cannot change the database whatever
// follows the SELECT, as on AXL. With [Config.Strict] the server also
// checks the Content-Type and SOAPAction headers a client sends.
//
// Tests can make the server throttle ([Server.Throttle]), hold requests
// until released ([Server.Hold]) and inspect what it received
// ([Server.Calls]). A server presents a self-signed certificate for
// localhost, 127.0.0.1 and ::1 unless given one; [Server.Client] returns an
// axl.Client that pins it.
//
// Informix specifics beyond quoting are not emulated, apart from the
// newid() function that generates a pkid. The unique index on cp_id in
// xmpps2snodes is this package's assumption, not documented IM and
// Presence behaviour: tests that need the table without it can replace it
// through [Server.DB].
package axltest
