package backend

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/weftnet/weft/host"
)

// This file is the model of the kernel entries the datapath owns and of the
// writes that change them; diff.go computes the writes. Nothing here does I/O.

// owned is the kernel view (what the datapath owns of it) indexed by owning
// subnet: each entry sits in the bucket of the peer that owned it when it was
// recorded (see peerTable.owner), an entry no peer owns in the orphans
// bucket (the zero Prefix). Peer subnets do not overlap, so a neighbour or a
// route is in exactly one bucket, and one diff per bucket (diffOwner) serves
// both a SetPeers (the buckets of the changed peers) and a reconcile (every
// bucket). Only the executor changes it.
type owned map[netip.Prefix]*state

// orphans is the key of the entries no peer owns.
var orphans netip.Prefix

// bucket returns the bucket of owner, creating it.
func (h owned) bucket(owner netip.Prefix) *state {
	b, ok := h[owner]
	if !ok {
		b = newBucket()
		h[owner] = b
	}
	return b
}

// get returns the bucket of owner, empty if there is none.
func (h owned) get(owner netip.Prefix) state {
	if b, ok := h[owner]; ok {
		return *b
	}
	return state{}
}

// neighEntry is a neighbour (of the datapath's family) on the VXLAN device.
type neighEntry struct {
	IP        netip.Addr
	MAC       string // net.HardwareAddr.String() form
	Permanent bool
}

// fdbEntry is a VXLAN forwarding entry (MAC → remote VTEP) on the device.
type fdbEntry struct {
	MAC string
	Dst netip.Addr
}

// routeEntry is a route (of the datapath's family) in the main table owned
// by the datapath.
type routeEntry struct {
	Dst      netip.Prefix
	Gw       netip.Addr // invalid for a via-less route
	Underlay bool       // on the underlay link (DirectRouting), else on the VXLAN device
	Onlink   bool
	// Proto is the route protocol: RouteProtocol for every route the
	// datapath writes; unix.RTPROT_BOOT for a route flannel (or an older
	// weft) left, which a reconcile takes over (see ownsRoute). (Next to
	// the bools, it takes no room: the struct stays 64 bytes.)
	Proto  uint8
	Metric uint32 // a peer route's is peerMetric(Dst); see the package doc
}

// peerMetric is the metric of the route to a peer's subnet: the subnet's
// number at its length (the address without its host bits), distinct for
// every subnet of one SubnetLen. The kernel finds a route's shared
// attributes (fib_info) in a hash table keyed by device, metric and a few
// other fields but not the gateway, so flannel's layout (every peer route
// through the same device at metric 0) puts all of them in one bucket and
// makes each insert scan all the others; distinct metrics spread them. The
// metric changes nothing else: peer subnets never overlap.
//
// An IPv6 subnet's number is cut to its low 32 bits (distinct for the
// subnets of a Network at most 32 bits shorter than SubnetLenV6, as with
// flannel's /48 and /64 by far); IPv6 keeps no shared attributes, so there
// the metric only keeps the layout uniform. An IPv6 route cannot have
// metric 0 (the kernel stores it as 1024), so a number of 0 gives 1024.
func peerMetric(subnet netip.Prefix) uint32 {
	if subnet.Addr().Is6() {
		a := subnet.Addr().As16()
		hi, lo := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
		var n uint64
		switch b := subnet.Bits(); {
		case b == 0:
		case b <= 64:
			n = hi >> (64 - b)
		case b < 128:
			n = lo>>(128-b) | hi<<(b-64)
		default:
			n = lo
		}
		if uint32(n) == 0 {
			return ip6DefaultMetric
		}
		return uint32(n)
	}
	if subnet.Bits() == 0 {
		return 0
	}
	a := subnet.Addr().As4()
	return binary.BigEndian.Uint32(a[:]) >> (32 - subnet.Bits())
}

// ip6DefaultMetric is the metric the kernel gives an IPv6 route added with
// metric 0 (IP6_RT_PRIO_USER): flannel's IPv6 peer routes have it, and a
// route the datapath wants "at metric 0" is wanted at it for IPv6.
const ip6DefaultMetric = 1024

// baseMetric is the metric of a route added without one: 0, or for IPv6
// ip6DefaultMetric.
func baseMetric(dst netip.Prefix) uint32 {
	if dst.Addr().Is6() {
		return ip6DefaultMetric
	}
	return 0
}

// state is (a part of) what the kernel holds, as far as we own it: one
// owner's bucket, or a kernel dump before rehome sorts it into buckets. A
// bucket usually holds one neighbour, one FDB entry and one route (more for
// a peer with pod-IP neighbours on demand, or for the orphans after a dump),
// so entries are kept in slices and a bucket is one allocation.
type state struct {
	neigh []neighEntry // one per IP
	// fdb holds (MAC, remote) pairs; of a MAC's remotes the first is the one
	// a replace rewrites.
	fdb   []fdbEntry
	route []routeEntry
}

// newState returns an empty state with room for about n entries of each kind.
func newState(n int) state {
	return state{neigh: make([]neighEntry, 0, n), fdb: make([]fdbEntry, 0, n), route: make([]routeEntry, 0, n)}
}

// newBucket returns an empty bucket with room for one entry of each kind
// in the same allocation.
func newBucket() *state {
	b := &struct {
		state
		n [1]neighEntry
		f [1]fdbEntry
		r [1]routeEntry
	}{}
	b.neigh, b.fdb, b.route = b.n[:0], b.f[:0], b.r[:0]
	return &b.state
}

func (s *state) empty() bool { return len(s.neigh) == 0 && len(s.fdb) == 0 && len(s.route) == 0 }

func (s state) neighAt(ip netip.Addr) (neighEntry, bool) {
	for _, n := range s.neigh {
		if n.IP == ip {
			return n, true
		}
	}
	return neighEntry{}, false
}

func (s state) hasFDB(f fdbEntry) bool { return slices.Contains(s.fdb, f) }

func (s state) hasRoute(r routeEntry) bool { return slices.Contains(s.route, r) }

// addFDB and addRoute add an entry found in a kernel dump.
func (s *state) addFDB(f fdbEntry) {
	if !s.hasFDB(f) {
		s.fdb = append(s.fdb, f)
	}
}

func (s *state) addRoute(r routeEntry) {
	if !s.hasRoute(r) {
		s.route = append(s.route, r)
	}
}

// record applies a successful op to s (O(entries of s): a bucket is small).
func (s *state) record(o op) {
	switch o.kind {
	case opNeighSet:
		if i := slices.IndexFunc(s.neigh, func(n neighEntry) bool { return n.IP == o.neigh.IP }); i >= 0 {
			s.neigh[i] = o.neigh
		} else {
			s.neigh = append(s.neigh, o.neigh)
		}
	case opNeighDel:
		s.neigh = slices.DeleteFunc(s.neigh, func(n neighEntry) bool { return n.IP == o.neigh.IP })
	case opFDBSet:
		// A replace (NLM_F_REPLACE) leaves the MAC alone when the remote
		// is already there and otherwise rewrites its first remote.
		if s.hasFDB(o.fdb) {
			return
		}
		if i := slices.IndexFunc(s.fdb, func(f fdbEntry) bool { return f.MAC == o.fdb.MAC }); i >= 0 {
			s.fdb[i] = o.fdb
		} else {
			s.fdb = append(s.fdb, o.fdb)
		}
	case opFDBDel:
		s.fdb = slices.DeleteFunc(s.fdb, func(f fdbEntry) bool { return f == o.fdb })
	case opRouteSet:
		// A replace overwrites the main-table route with the same
		// destination and metric, whatever its device.
		if i := slices.IndexFunc(s.route, func(r routeEntry) bool { return r.Dst == o.route.Dst && r.Metric == o.route.Metric }); i >= 0 {
			s.route[i] = o.route
		} else {
			s.route = append(s.route, o.route)
		}
	case opRouteDel:
		s.route = slices.DeleteFunc(s.route, func(r routeEntry) bool { return r == o.route })
	}
}

// opKind names one kernel write.
type opKind uint8

const (
	opNeighSet opKind = iota
	opFDBSet
	opRouteSet
	opRouteDel
	opNeighDel
	opFDBDel
)

// op is one kernel write; peer is its owner: the bucket it was diffed from,
// where the executor records it (zero for the orphans).
type op struct {
	kind  opKind
	peer  netip.Prefix
	neigh neighEntry
	fdb   fdbEntry
	route routeEntry
}

func (o op) String() string {
	verb := "del"
	if o.kind == opNeighSet || o.kind == opFDBSet || o.kind == opRouteSet {
		verb = "replace"
	}
	switch o.kind {
	case opNeighSet, opNeighDel:
		return fmt.Sprintf("neigh %s %s lladdr %s%s", verb, o.neigh.IP, o.neigh.MAC, nudText(o.neigh.Permanent))
	case opFDBSet, opFDBDel:
		return fmt.Sprintf("fdb %s %s dst %s", verb, o.fdb.MAC, o.fdb.Dst)
	default:
		return "route " + verb + " " + o.route.String()
	}
}

func nudText(permanent bool) string {
	if permanent {
		return " permanent"
	}
	return ""
}

func (r routeEntry) String() string {
	var b strings.Builder
	b.WriteString(r.Dst.String())
	if r.Gw.IsValid() {
		b.WriteString(" via " + r.Gw.String())
	}
	if r.Underlay {
		b.WriteString(" dev underlay")
	} else {
		b.WriteString(" dev vxlan")
	}
	if r.Onlink {
		b.WriteString(" onlink")
	}
	if r.Metric != 0 {
		fmt.Fprintf(&b, " metric %d", r.Metric)
	}
	if r.Proto != RouteProtocol {
		b.WriteString(" proto " + host.ProtoName(r.Proto))
	}
	return b.String()
}

// routeKey drops the flags that a replace changes in place.
func routeKey(r routeEntry) routeEntry {
	r.Onlink = false
	return r
}

func compareOps(a, b op) int {
	if c := cmp.Compare(a.kind, b.kind); c != 0 {
		return c
	}
	switch a.kind {
	case opRouteDel, opRouteSet:
		if c := comparePrefix(a.route.Dst, b.route.Dst); c != 0 {
			return c
		}
		return strings.Compare(a.route.String(), b.route.String())
	case opNeighDel, opNeighSet:
		return a.neigh.IP.Compare(b.neigh.IP)
	default:
		if c := strings.Compare(a.fdb.MAC, b.fdb.MAC); c != 0 {
			return c
		}
		return a.fdb.Dst.Compare(b.fdb.Dst)
	}
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// macString canonicalises a hardware address for comparisons.
func macString(hw net.HardwareAddr) string { return hw.String() }
