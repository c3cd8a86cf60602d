// Command demo is the README's main job: it runs what xmppfed can do on
// loopback, in one process, and prints the trace an operator would read.
//
// At this stage it exercises the building blocks of an Expressway-style edge:
// locating federated domains through DNS SRV (served by an in-process DNS
// server on 127.0.0.1), the security-mode rules, and a server dialback round
// trip between an initiating, a receiving and an authoritative server. Later
// stages add real S2S streams, the router link, the core and the IM&P
// stand-in; the command stays `go run ./examples/demo`.
package main
