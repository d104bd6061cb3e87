package host

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Fake is an in-memory Host that records every write and behaves like the
// kernel where the datapath depends on it: duplicate link adds fail with
// EEXIST, deletes of absent entries fail with ENOENT/ESRCH, an FDB replace
// rewrites the MAC's first remote, deleting a link drops its addresses,
// neighbours, FDB entries, neighbour-table parameters and routes (and the
// VXLAN links on top of it), and sysctls exist only for existing links.
// Dumps are retried while interrupted, as NS's are. Clone returns the Fake
// itself, so a clone's writes land in the same log.
//
// Only what weft uses is modelled: links are *netlink.Vxlan or
// *netlink.Device; routes live in the main table, keyed by destination and
// metric, with a protocol, which Lines and Ops show as iproute2 does ("proto
// 119"; nothing for boot). IPv4 and IPv6 are kept apart as the kernel keeps
// them: dumps list the family asked for, a neighbour's family must be its
// address's, an IPv6 route given metric 0 gets 1024 (IP6_RT_PRIO_USER), an
// IPv6 address brings its prefix route (proto kernel, metric 256; IPv4
// connected routes are not modelled), and app_solicit is set per family's
// neighbour table.
type Fake struct {
	// Fail, when set, is called with the rendered line of every write
	// (e.g. "route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1
	// proto 119 onlink metric 717826") before it is applied; a non-nil error
	// fails the call.
	Fail func(op string) error
	// InterruptDumps makes the next n dump attempts return a partial
	// result and netlink.ErrDumpInterrupted, as the kernel does when the
	// table changes mid-dump; the Fake retries them as NS does.
	InterruptDumps int

	mu       sync.Mutex
	next     int
	links    map[int]netlink.Link
	addrs    map[int][]fakeAddr
	neighs   map[int]map[netip.Addr]netlink.Neigh
	fdb      map[int][]fakeFDB
	routes   []netlink.Route
	sysctls  map[string]string
	appSol   map[neighTable]int // app_solicit set through the neighbour tables
	ops      []string
	neighSub []*fakeSub[netlink.NeighUpdate]
	linkSub  []*fakeSub[netlink.LinkUpdate]
}

// fakeAddr is an address with its IFA_F_* flags as given.
type fakeAddr struct {
	p     netip.Prefix
	flags int
}

// neighTable names one link's parameters in a family's neighbour table.
type neighTable struct{ ifindex, family int }

type fakeFDB struct {
	mac net.HardwareAddr
	dst netip.Addr
}

type fakeSub[T any] struct {
	ch     chan T
	onErr  func(error)
	ctx    context.Context
	closed bool
}

var _ Host = (*Fake)(nil)

// NewFake returns an empty fake namespace.
func NewFake() *Fake {
	return &Fake{
		next:    1,
		links:   map[int]netlink.Link{},
		addrs:   map[int][]fakeAddr{},
		neighs:  map[int]map[netip.Addr]netlink.Neigh{},
		fdb:     map[int][]fakeFDB{},
		sysctls: map[string]string{},
		appSol:  map[neighTable]int{},
	}
}

// AddUnderlay adds an up link with addresses (setup, not recorded as an op)
// and returns its index: a dual-stack underlay has an IPv4 and an IPv6 one.
func (f *Fake) AddUnderlay(name string, mtu int, addr netip.Prefix, more ...netip.Prefix) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	idx := f.next
	f.next++
	f.links[idx] = &netlink.Device{LinkAttrs: netlink.LinkAttrs{
		Name: name, Index: idx, MTU: mtu, Flags: net.FlagUp,
		HardwareAddr: net.HardwareAddr{0x02, 0xee, 0, 0, 0, byte(idx)},
	}}
	for _, p := range append([]netip.Prefix{addr}, more...) {
		f.addrs[idx] = append(f.addrs[idx], fakeAddr{p: p})
		f.addPrefixRoute(idx, fakeAddr{p: p})
	}
	return idx
}

// Ops returns the writes since the last ResetOps, in order.
func (f *Fake) Ops() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ops)
}

// ResetOps forgets the recorded writes.
func (f *Fake) ResetOps() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = nil
}

// begin renders and checks a write; callers hold f.mu.
func (f *Fake) begin(line string) error {
	if f.Fail != nil {
		if err := f.Fail(line); err != nil {
			return err
		}
	}
	f.ops = append(f.ops, line)
	return nil
}

// fakeDump runs a dump as NS does, retrying while InterruptDumps makes an
// attempt fail; callers hold f.mu.
func fakeDump[T any](f *Fake, what string, dump func() []T) ([]T, error) {
	return listRetry(what, func() ([]T, error) {
		res := dump()
		if f.InterruptDumps > 0 {
			f.InterruptDumps--
			return res[:len(res)/2], netlink.ErrDumpInterrupted
		}
		return res, nil
	})
}

// Clone implements Host: the Fake is its own clone. A type that embeds the
// Fake to change some methods inherits this Clone, whose writes then bypass
// those changes; it overrides Clone if they must apply to a clone too.
func (f *Fake) Clone() (Host, error) { return f, nil }

// Close implements Host; the Fake stays usable.
func (f *Fake) Close() error { return nil }

func notFound(what string) error { return fmt.Errorf("%s not found: %w", what, unix.ENODEV) }

func (f *Fake) byName(name string) (int, bool) {
	for i, l := range f.links {
		if l.Attrs().Name == name {
			return i, true
		}
	}
	return 0, false
}

func (f *Fake) name(idx int) string {
	if l, ok := f.links[idx]; ok {
		return l.Attrs().Name
	}
	return fmt.Sprintf("if%d", idx)
}

// copyLink returns a deep enough copy of the link types the fake models.
func copyLink(l netlink.Link) (netlink.Link, error) {
	switch l := l.(type) {
	case *netlink.Vxlan:
		c := *l
		c.HardwareAddr = slices.Clone(l.HardwareAddr)
		c.SrcAddr = slices.Clone(l.SrcAddr)
		return &c, nil
	case *netlink.Device:
		c := *l
		c.HardwareAddr = slices.Clone(l.HardwareAddr)
		return &c, nil
	}
	return nil, fmt.Errorf("fake: link type %q: %w", l.Type(), unix.EOPNOTSUPP)
}

func (f *Fake) describe(l netlink.Link) string {
	a := l.Attrs()
	s := fmt.Sprintf("%s %s", a.Name, l.Type())
	if vx, ok := l.(*netlink.Vxlan); ok {
		s += fmt.Sprintf(" id %d local %s dev %s port %d", vx.VxlanId, vx.SrcAddr, f.name(vx.VtepDevIndex), vx.Port)
		if !vx.Learning {
			s += " nolearning"
		}
		for _, fl := range []struct {
			on   bool
			name string
		}{{vx.L2miss, "l2miss"}, {vx.L3miss, "l3miss"}, {vx.GBP, "gbp"}} {
			if fl.on {
				s += " " + fl.name
			}
		}
	}
	return s + fmt.Sprintf(" mtu %d", a.MTU)
}

// LinkAdd implements Host.
func (f *Fake) LinkAdd(l netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.byName(l.Attrs().Name); ok {
		return fmt.Errorf("link %s: %w", l.Attrs().Name, unix.EEXIST)
	}
	c, err := copyLink(l)
	if err != nil {
		return err
	}
	if vx, ok := c.(*netlink.Vxlan); ok {
		if _, ok := f.links[vx.VtepDevIndex]; !ok {
			return notFound(fmt.Sprintf("vxlan dev index %d", vx.VtepDevIndex))
		}
		if vx.Port == 0 {
			vx.Port = 8472
		}
	}
	a := c.Attrs()
	if a.MTU == 0 {
		a.MTU = 1500
	}
	if err := f.begin("link add " + f.describe(c)); err != nil {
		return err
	}
	a.Index, a.Flags = f.next, 0
	f.next++
	if a.HardwareAddr == nil {
		a.HardwareAddr = net.HardwareAddr{0x02, 0xfa, 0, 0, 0, byte(a.Index)}
	}
	f.links[a.Index] = c
	f.emitLink(unix.RTM_NEWLINK, c)
	return nil
}

// LinkDel implements Host.
func (f *Fake) LinkDel(l netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	idx := l.Attrs().Index
	if idx == 0 {
		idx, _ = f.byName(l.Attrs().Name)
	}
	cur, ok := f.links[idx]
	if !ok {
		return notFound("link " + l.Attrs().Name)
	}
	if err := f.begin("link del " + cur.Attrs().Name); err != nil {
		return err
	}
	f.removeLink(idx)
	return nil
}

// RemoveLink deletes a link without recording an op, as if someone ran
// `ip link del` (setup for tests of the link watcher).
func (f *Fake) RemoveLink(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	idx, ok := f.byName(name)
	if ok {
		f.removeLink(idx)
	}
	return ok
}

func (f *Fake) removeLink(idx int) {
	l := f.links[idx]
	delete(f.links, idx)
	delete(f.addrs, idx)
	delete(f.neighs, idx)
	delete(f.fdb, idx)
	maps.DeleteFunc(f.appSol, func(k neighTable, _ int) bool { return k.ifindex == idx })
	f.routes = slices.DeleteFunc(f.routes, func(r netlink.Route) bool { return r.LinkIndex == idx })
	f.emitLink(unix.RTM_DELLINK, l)
	for i, u := range f.links {
		if vx, ok := u.(*netlink.Vxlan); ok && vx.VtepDevIndex == idx {
			f.removeLink(i) // the kernel deletes VXLAN devices with their lower device
		}
	}
}

// LinkList implements Host, in index order.
func (f *Fake) LinkList() ([]netlink.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fakeDump(f, "links", func() []netlink.Link {
		var res []netlink.Link
		for _, idx := range slices.Sorted(maps.Keys(f.links)) {
			if c, err := copyLink(f.links[idx]); err == nil {
				res = append(res, c)
			}
		}
		return res
	})
}

// LinkByName implements Host.
func (f *Fake) LinkByName(name string) (netlink.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	idx, ok := f.byName(name)
	if !ok {
		return nil, notFound("link " + name)
	}
	return copyLink(f.links[idx])
}

// LinkByIndex implements Host.
func (f *Fake) LinkByIndex(idx int) (netlink.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.links[idx]
	if !ok {
		return nil, notFound(fmt.Sprintf("link index %d", idx))
	}
	return copyLink(l)
}

// setLink applies change to an existing link and records line.
func (f *Fake) setLink(l netlink.Link, line string, change func(a *netlink.LinkAttrs)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.links[l.Attrs().Index]
	if !ok {
		return notFound("link " + l.Attrs().Name)
	}
	if err := f.begin(fmt.Sprintf("link set %s %s", cur.Attrs().Name, line)); err != nil {
		return err
	}
	change(cur.Attrs())
	f.emitLink(unix.RTM_NEWLINK, cur)
	return nil
}

// LinkSetUp implements Host.
func (f *Fake) LinkSetUp(l netlink.Link) error {
	return f.setLink(l, "up", func(a *netlink.LinkAttrs) { a.Flags |= net.FlagUp })
}

// LinkSetMTU implements Host.
func (f *Fake) LinkSetMTU(l netlink.Link, mtu int) error {
	return f.setLink(l, fmt.Sprintf("mtu %d", mtu), func(a *netlink.LinkAttrs) { a.MTU = mtu })
}

// LinkSetHardwareAddr implements Host.
func (f *Fake) LinkSetHardwareAddr(l netlink.Link, hw net.HardwareAddr) error {
	return f.setLink(l, "address "+hw.String(), func(a *netlink.LinkAttrs) { a.HardwareAddr = slices.Clone(hw) })
}

// LinkSetIP6AddrGenMode implements Host.
func (f *Fake) LinkSetIP6AddrGenMode(l netlink.Link, mode int) error {
	return f.setLink(l, fmt.Sprintf("addrgenmode %d", mode), func(*netlink.LinkAttrs) {})
}
