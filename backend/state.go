package backend

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
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
		b = &state{}
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

// neighEntry is an IPv4 neighbour on the VXLAN device.
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

// routeEntry is an IPv4 route in the main table owned by the datapath.
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
// makes each insert scan all the others: 5000 routes took 421 ms through
// `ip -batch` on the bench machine, 79 ms with distinct metrics. The metric
// changes nothing else: peer subnets never overlap.
func peerMetric(subnet netip.Prefix) uint32 {
	if subnet.Bits() == 0 {
		return 0
	}
	a := subnet.Addr().As4()
	return binary.BigEndian.Uint32(a[:]) >> (32 - subnet.Bits())
}

// state is (a part of) what the kernel holds (as far as we own it), indexed the way the
// kernel keys its entries so that recording a write is O(1): neighbours by
// IP, FDB remotes by MAC, routes by destination. The slices hold more than
// one element only for entries the kernel had before we wrote (a second
// remote of a MAC, a second route to a destination at another metric).
type state struct {
	neigh map[netip.Addr]neighEntry
	fdb   map[string][]netip.Addr       // MAC → remotes, the first is the one a replace rewrites
	route map[netip.Prefix][]routeEntry // destination → routes
}

// newState returns an empty state with room for about n peers.
func newState(n int) state {
	return state{
		neigh: make(map[netip.Addr]neighEntry, n),
		fdb:   make(map[string][]netip.Addr, n),
		route: make(map[netip.Prefix][]routeEntry, n),
	}
}

func (s state) hasFDB(f fdbEntry) bool { return slices.Contains(s.fdb[f.MAC], f.Dst) }

func (s state) hasRoute(r routeEntry) bool { return slices.Contains(s.route[r.Dst], r) }

// addFDB and addRoute add an entry found in a kernel dump.
func (s state) addFDB(f fdbEntry) {
	if !s.hasFDB(f) {
		s.fdb[f.MAC] = append(s.fdb[f.MAC], f.Dst)
	}
}

func (s state) addRoute(r routeEntry) {
	if !s.hasRoute(r) {
		s.route[r.Dst] = append(s.route[r.Dst], r)
	}
}

func (s *state) empty() bool { return len(s.neigh) == 0 && len(s.fdb) == 0 && len(s.route) == 0 }

// init makes s writable; a bucket starts without maps (most hold one
// neighbour, one FDB entry and one route).
func (s *state) init() {
	if s.neigh == nil {
		s.neigh, s.fdb, s.route = map[netip.Addr]neighEntry{}, map[string][]netip.Addr{}, map[netip.Prefix][]routeEntry{}
	}
}

// record applies a successful op to s in O(1).
func (s *state) record(o op) {
	s.init()
	switch o.kind {
	case opNeighSet:
		s.neigh[o.neigh.IP] = o.neigh
	case opNeighDel:
		delete(s.neigh, o.neigh.IP)
	case opFDBSet:
		// A replace (NLM_F_REPLACE) leaves the MAC alone when the remote
		// is already there and otherwise rewrites its first remote.
		switch dsts := s.fdb[o.fdb.MAC]; {
		case slices.Contains(dsts, o.fdb.Dst):
		case len(dsts) > 0:
			dsts[0] = o.fdb.Dst
		default:
			s.fdb[o.fdb.MAC] = []netip.Addr{o.fdb.Dst}
		}
	case opFDBDel:
		dsts := slices.DeleteFunc(s.fdb[o.fdb.MAC], func(d netip.Addr) bool { return d == o.fdb.Dst })
		setOrDelete(s.fdb, o.fdb.MAC, dsts)
	case opRouteSet:
		// A replace overwrites the main-table route with the same
		// destination and metric, whatever its device.
		rs := s.route[o.route.Dst]
		if i := slices.IndexFunc(rs, func(r routeEntry) bool { return r.Metric == o.route.Metric }); i >= 0 {
			rs[i] = o.route
		} else {
			rs = append(rs, o.route)
		}
		s.route[o.route.Dst] = rs
	case opRouteDel:
		rs := slices.DeleteFunc(s.route[o.route.Dst], func(r routeEntry) bool { return r == o.route })
		setOrDelete(s.route, o.route.Dst, rs)
	}
}

func setOrDelete[K comparable, V any](m map[K][]V, k K, vs []V) {
	if len(vs) == 0 {
		delete(m, k)
		return
	}
	m[k] = vs
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

// op is one kernel write; peer is the subnet it serves or, for a delete, the
// wanted peer the stale entry belonged to (zero for peerless entries).
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
		b.WriteString(" proto " + protoName(r.Proto))
	}
	return b.String()
}

// protoName names a route protocol as iproute2 does without its
// configuration files: the kernel's own by name, any other by number.
func protoName(p uint8) string {
	switch p {
	case unix.RTPROT_UNSPEC:
		return "unspec"
	case unix.RTPROT_REDIRECT:
		return "redirect"
	case unix.RTPROT_KERNEL:
		return "kernel"
	case unix.RTPROT_BOOT:
		return "boot"
	case unix.RTPROT_STATIC:
		return "static"
	case RouteProtocol:
		return routeProtocolName
	}
	return strconv.Itoa(int(p))
}

var routeProtocolName = strconv.Itoa(RouteProtocol)

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
