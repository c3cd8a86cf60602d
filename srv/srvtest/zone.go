package srvtest

import (
	"fmt"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// DefaultTTL is the TTL of records written without one.
const DefaultTTL = 300

// ednsSize is the UDP payload size advertised in answers to EDNS0 queries.
const ednsSize = 1232

// maxUDPPayload is the largest UDP payload over IPv4 (65535 less the IP and
// UDP headers), and so the most a UDP answer can carry whatever buffer size
// the client advertises.
const maxUDPPayload = 65507

// Fault is a misbehaviour injected for a name and type with
// [Zone.SetFault].
type Fault int

// Faults.
const (
	NoFault  Fault = iota // answer normally
	ServFail              // answer SERVFAIL
	Refused               // answer REFUSED
	Drop                  // never answer, so the client times out
	Truncate              // over UDP, answer with TC set and no records; TCP answers normally
)

func (f Fault) String() string {
	switch f {
	case NoFault:
		return "NoFault"
	case ServFail:
		return "ServFail"
	case Refused:
		return "Refused"
	case Drop:
		return "Drop"
	case Truncate:
		return "Truncate"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

type qkey struct {
	name  string // canonical: lowercase, fully qualified
	qtype uint16
}

// Zone is the data a [Server] answers from: resource records and injected
// faults. It is a [dns.Handler], so it can also be mounted on one's own
// [dns.Server] or [dns.ServeMux]. It is safe for concurrent use, so tests may
// change it while a server runs. The zero value is not usable; use [NewZone]
// or [ParseZone].
//
// Names are not restricted to one zone cut: the server is authoritative for
// every name. Wildcards and delegations are not supported. Negative answers
// carry the closest enclosing SOA record if the zone has one, which lets
// resolvers cache them (RFC 2308).
type Zone struct {
	mu     sync.RWMutex
	names  map[string][]dns.RR
	faults map[qkey]Fault
}

// NewZone returns an empty zone.
func NewZone() *Zone {
	return &Zone{names: make(map[string][]dns.RR), faults: make(map[qkey]Fault)}
}

// ParseZone parses RFC 1035 master-file text with origin "." and a default
// TTL of DefaultTTL, for example:
//
//	_xmpp-server._tcp.a.test. 300 IN SRV 0 0 5269 xmpp.a.test.
//	xmpp.a.test.              300 IN A   127.0.0.1
func ParseZone(text string) (*Zone, error) {
	z := NewZone()
	if err := z.Add(text); err != nil {
		return nil, err
	}
	return z, nil
}

// MustParseZone is ParseZone that panics on error, for fixed test data.
func MustParseZone(text string) *Zone {
	z, err := ParseZone(text)
	if err != nil {
		panic(err)
	}
	return z
}

// Add parses each argument as master-file text (one or more records) and
// adds the records; exact duplicates are ignored. On a syntax error nothing
// is added.
func (z *Zone) Add(rr ...string) error {
	var parsed []dns.RR
	for _, text := range rr {
		zp := dns.NewZoneParser(strings.NewReader(text), ".", "")
		zp.SetDefaultTTL(DefaultTTL)
		for r, ok := zp.Next(); ok; r, ok = zp.Next() {
			parsed = append(parsed, r)
		}
		if err := zp.Err(); err != nil {
			return fmt.Errorf("srvtest: %w", err)
		}
	}
	z.AddRR(parsed...)
	return nil
}

// AddRR adds records; exact duplicates are ignored.
func (z *Zone) AddRR(rrs ...dns.RR) {
	z.mu.Lock()
	defer z.mu.Unlock()
next:
	for _, rr := range rrs {
		rr = dns.Copy(rr)
		name := dns.CanonicalName(rr.Header().Name)
		rr.Header().Name = name
		for _, old := range z.names[name] {
			if dns.IsDuplicate(old, rr) {
				continue next
			}
		}
		z.names[name] = append(z.names[name], rr)
	}
}

// Remove deletes the records of type qtype at name; dns.TypeANY deletes all
// records at name.
func (z *Zone) Remove(name string, qtype uint16) {
	name = dns.CanonicalName(name)
	z.mu.Lock()
	defer z.mu.Unlock()
	var keep []dns.RR
	for _, rr := range z.names[name] {
		if qtype != dns.TypeANY && rr.Header().Rrtype != qtype {
			keep = append(keep, rr)
		}
	}
	if len(keep) == 0 {
		delete(z.names, name)
		return
	}
	z.names[name] = keep
}

// SetFault makes queries for name and qtype misbehave as f; dns.TypeANY
// applies f to every type at name not given its own fault. NoFault clears.
func (z *Zone) SetFault(name string, qtype uint16, f Fault) {
	k := qkey{dns.CanonicalName(name), qtype}
	z.mu.Lock()
	defer z.mu.Unlock()
	if f == NoFault {
		delete(z.faults, k)
		return
	}
	z.faults[k] = f
}

func (z *Zone) fault(name string, qtype uint16) Fault {
	z.mu.RLock()
	defer z.mu.RUnlock()
	if f, ok := z.faults[qkey{name, qtype}]; ok {
		return f
	}
	return z.faults[qkey{name, dns.TypeANY}]
}

// ServeDNS answers r as an authoritative server for every name would, or as
// a fault set for the question says. It answers FORMERR to a request without
// exactly one question, NOTIMP to an opcode other than QUERY, REFUSED to a
// class other than IN and nothing to a response. An EDNS0 query gets an OPT
// advertising 1232 bytes back. Over UDP (w.LocalAddr is a UDP address), an
// answer too large for the client's buffer (or for a datagram, 65507 bytes)
// is truncated and [Truncate] applies. Over TCP, an answer larger than a DNS message can be (65535 bytes) is
// compressed and, if still too large, cut to the records that fit with the TC
// bit set. An answer that cannot be encoded at all, because of a malformed
// record added with [Zone.AddRR], is SERVFAIL: a query is never met with
// silence unless [Drop] says so.
func (z *Zone) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	a := w.LocalAddr()
	if resp := z.reply(r, a != nil && a.Network() == "udp"); resp != nil {
		_ = w.WriteMsg(resp)
	}
}

// reply returns the answer to req; nil means send nothing.
func (z *Zone) reply(req *dns.Msg, udp bool) *dns.Msg {
	if req.Response {
		return nil // never answer answers
	}
	resp := new(dns.Msg)
	if len(req.Question) != 1 {
		resp.SetRcodeFormatError(req)
		return resp
	}
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)
	resp.SetReply(req)
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(size, int(opt.UDPSize()))
		resp.SetEdns0(ednsSize, false)
	}
	switch {
	case req.Opcode != dns.OpcodeQuery:
		resp.Rcode = dns.RcodeNotImplemented
		return resp
	case q.Qclass != dns.ClassINET:
		resp.Rcode = dns.RcodeRefused
		return resp
	}
	switch z.fault(name, q.Qtype) {
	case Drop:
		return nil
	case ServFail:
		resp.Rcode = dns.RcodeServerFailure
		return resp
	case Refused:
		resp.Rcode = dns.RcodeRefused
		return resp
	case Truncate:
		if udp {
			resp.Authoritative, resp.Truncated = true, true
			return resp
		}
	}
	resp.Authoritative = true
	z.answer(resp, name, q.Qtype)
	if udp {
		size = min(size, maxUDPPayload)
	} else {
		size = dns.MaxMsgSize
	}
	resp.Truncate(size)
	if _, err := resp.Pack(); err != nil {
		fail := new(dns.Msg)
		fail.SetRcode(req, dns.RcodeServerFailure)
		if req.IsEdns0() != nil {
			fail.SetEdns0(ednsSize, false)
		}
		return fail
	}
	return resp
}

// maxChase bounds CNAME chains, which may loop.
const maxChase = 8

// answer fills resp for the canonical name and qtype as an authoritative
// server would.
func (z *Zone) answer(resp *dns.Msg, name string, qtype uint16) {
	z.mu.RLock()
	defer z.mu.RUnlock()
	cur := name
	for range maxChase {
		rrs, exists := z.names[cur]
		if !exists {
			if cur != name {
				return // CNAME to a name we do not have: the client chases it
			}
			if !z.hasBelow(cur) {
				resp.Rcode = dns.RcodeNameError
			}
			z.addSOA(resp, cur)
			return
		}
		var cname *dns.CNAME
		n := len(resp.Answer)
		for _, rr := range rrs {
			t := rr.Header().Rrtype
			if t == qtype || qtype == dns.TypeANY {
				resp.Answer = append(resp.Answer, dns.Copy(rr))
			}
			if c, ok := rr.(*dns.CNAME); ok {
				cname = c
			}
		}
		if len(resp.Answer) > n || cname == nil {
			if len(resp.Answer) == 0 {
				z.addSOA(resp, cur) // NODATA
			}
			return
		}
		resp.Answer = append(resp.Answer, dns.Copy(cname))
		next := dns.CanonicalName(cname.Target)
		for _, rr := range resp.Answer {
			if rr.Header().Name == next {
				return // a loop: stop after showing it once
			}
		}
		cur = next
	}
}

// hasBelow reports whether name is an empty non-terminal: some name below
// it has records.
func (z *Zone) hasBelow(name string) bool {
	if name == "." {
		return len(z.names) > 0
	}
	for k := range z.names {
		if strings.HasSuffix(k, "."+name) {
			return true
		}
	}
	return false
}

// addSOA puts the closest enclosing SOA into the authority section.
func (z *Zone) addSOA(resp *dns.Msg, name string) {
	for off, end := 0, false; !end; off, end = dns.NextLabel(name, off) {
		for _, rr := range z.names[name[off:]] {
			if rr.Header().Rrtype == dns.TypeSOA {
				resp.Ns = append(resp.Ns, dns.Copy(rr))
				return
			}
		}
	}
	for _, rr := range z.names["."] {
		if rr.Header().Rrtype == dns.TypeSOA {
			resp.Ns = append(resp.Ns, dns.Copy(rr))
			return
		}
	}
}
