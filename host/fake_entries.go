package host

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// This file holds the Fake's addresses, neighbours, FDB, routes, sysctls,
// subscriptions and rendering.

func (f *Fake) link(l netlink.Link) (int, error) {
	idx := l.Attrs().Index
	if _, ok := f.links[idx]; !ok {
		return 0, notFound("link " + l.Attrs().Name)
	}
	return idx, nil
}

// AddrReplace implements Host.
func (f *Fake) AddrReplace(l netlink.Link, a *netlink.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	idx, err := f.link(l)
	if err != nil {
		return err
	}
	p, ok := IPNetPrefix(a.IPNet)
	if !ok {
		return fmt.Errorf("fake: bad address %v: %w", a.IPNet, unix.EINVAL)
	}
	if err := f.begin(fmt.Sprintf("addr replace %s dev %s%s", p, f.name(idx), addrFlagsText(a.Flags))); err != nil {
		return err
	}
	if i := slices.IndexFunc(f.addrs[idx], func(x fakeAddr) bool { return x.p == p }); i >= 0 {
		f.addrs[idx][i].flags = a.Flags // a replace sets the flags given
	} else {
		f.addrs[idx] = append(f.addrs[idx], fakeAddr{p: p, flags: a.Flags})
	}
	f.addPrefixRoute(idx, fakeAddr{p: p, flags: a.Flags})
	return nil
}

// AddrDel implements Host.
func (f *Fake) AddrDel(l netlink.Link, a *netlink.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	idx, err := f.link(l)
	if err != nil {
		return err
	}
	p, _ := IPNetPrefix(a.IPNet)
	i := slices.IndexFunc(f.addrs[idx], func(x fakeAddr) bool { return x.p == p })
	if i < 0 {
		return fmt.Errorf("addr %s: %w", p, unix.EADDRNOTAVAIL)
	}
	if err := f.begin(fmt.Sprintf("addr del %s dev %s", p, f.name(idx))); err != nil {
		return err
	}
	f.delPrefixRoute(idx, f.addrs[idx][i])
	f.addrs[idx] = slices.Delete(f.addrs[idx], i, i+1)
	return nil
}

// AddrList implements Host; a nil link lists every link's addresses.
func (f *Fake) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	idxs := slices.Sorted(maps.Keys(f.links))
	if l != nil {
		idx, err := f.link(l)
		if err != nil {
			return nil, err
		}
		idxs = []int{idx}
	}
	return fakeDump(f, "addresses", func() []netlink.Addr {
		var res []netlink.Addr
		for _, idx := range idxs {
			for _, a := range f.addrs[idx] {
				if !inFamily(family, a.p.Addr()) {
					continue
				}
				res = append(res, netlink.Addr{IPNet: PrefixIPNet(a.p), LinkIndex: idx, Flags: a.flags})
			}
		}
		return res
	})
}

// addrFlagsText renders the address flags weft sets as iproute2 does.
func addrFlagsText(flags int) string {
	if flags&unix.IFA_F_NODAD != 0 {
		return " nodad"
	}
	return ""
}

// inFamily reports whether a dump of family (AF_INET, AF_INET6, or
// AF_UNSPEC for all) lists ip.
func inFamily(family int, ip netip.Addr) bool {
	switch family {
	case unix.AF_INET:
		return ip.Is4()
	case unix.AF_INET6:
		return ip.Is6()
	}
	return true
}

// neighFamilyOK reports whether a neighbour's family fits its address: the
// kernel reads as many bytes of the address as the family's table keys
// have, so an IPv6 address sent as AF_INET would become a wrong IPv4 entry.
// The Fake refuses that mix-up (EINVAL) instead. Family 0 is taken from the
// address, as the netlink library does.
func neighFamilyOK(family int, ip netip.Addr) bool {
	return family == 0 || (family == unix.AF_INET && ip.Is4()) || (family == unix.AF_INET6 && ip.Is6())
}

// ip6PrefixRoute is the main-table route the kernel adds with an IPv6
// address (unless IFA_F_NOPREFIXROUTE): the address's prefix on its link,
// protocol kernel, metric 256. IPv4 connected routes are not modelled.
func ip6PrefixRoute(idx int, p netip.Prefix) netlink.Route {
	return netlink.Route{LinkIndex: idx, Dst: PrefixIPNet(p.Masked()), Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST,
		Protocol: unix.RTPROT_KERNEL, Priority: 256}
}

// addPrefixRoute and delPrefixRoute keep an IPv6 address's prefix route;
// callers hold f.mu.
func (f *Fake) addPrefixRoute(idx int, a fakeAddr) {
	if !a.p.Addr().Is6() || a.flags&unix.IFA_F_NOPREFIXROUTE != 0 {
		return
	}
	r := ip6PrefixRoute(idx, a.p)
	f.delPrefixRoute(idx, a)
	f.routes = append(f.routes, r)
}

func (f *Fake) delPrefixRoute(idx int, a fakeAddr) {
	if !a.p.Addr().Is6() {
		return
	}
	r := ip6PrefixRoute(idx, a.p)
	f.routes = slices.DeleteFunc(f.routes, func(o netlink.Route) bool {
		return o.LinkIndex == idx && o.Protocol == r.Protocol && o.Priority == r.Priority && sameIPNet(o.Dst, r.Dst)
	})
}

func neighLine(verb string, n *netlink.Neigh, dev string) string {
	if n.Family == unix.AF_BRIDGE {
		return fmt.Sprintf("fdb %s%s dev %s self dst %s%s", verb, n.HardwareAddr, dev, n.IP, stateText(n.State))
	}
	return fmt.Sprintf("neigh %s%s lladdr %s dev %s%s", verb, n.IP, n.HardwareAddr, dev, stateText(n.State))
}

func stateText(s int) string {
	switch {
	case s&netlink.NUD_PERMANENT != 0:
		return " permanent"
	case s&netlink.NUD_REACHABLE != 0:
		return " reachable"
	case s&netlink.NUD_STALE != 0:
		return " stale"
	}
	return ""
}

// NeighSet implements Host (NLM_F_CREATE|NLM_F_REPLACE).
func (f *Fake) NeighSet(n *netlink.Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.links[n.LinkIndex]
	if !ok {
		return notFound(fmt.Sprintf("link index %d", n.LinkIndex))
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok || len(n.HardwareAddr) != 6 {
		return fmt.Errorf("fake: neigh needs an IP and a MAC: %w", unix.EINVAL)
	}
	ip = ip.Unmap()
	if n.Family != unix.AF_BRIDGE && !neighFamilyOK(n.Family, ip) {
		return fmt.Errorf("fake: neigh %s in family %d: %w", ip, n.Family, unix.EINVAL)
	}
	if err := f.begin(neighLine("replace ", n, l.Attrs().Name)); err != nil {
		return err
	}
	c := *n
	c.IP, c.HardwareAddr = ip.AsSlice(), slices.Clone(n.HardwareAddr)
	if n.Family != unix.AF_BRIDGE {
		if f.neighs[n.LinkIndex] == nil {
			f.neighs[n.LinkIndex] = map[netip.Addr]netlink.Neigh{}
		}
		f.neighs[n.LinkIndex][ip] = c
		return nil
	}
	if _, ok := l.(*netlink.Vxlan); !ok {
		return fmt.Errorf("fake: fdb on %s: %w", l.Type(), unix.EOPNOTSUPP)
	}
	for i, e := range f.fdb[n.LinkIndex] {
		if bytes.Equal(e.mac, n.HardwareAddr) {
			f.fdb[n.LinkIndex][i].dst = ip // replace rewrites the first remote
			return nil
		}
	}
	f.fdb[n.LinkIndex] = append(f.fdb[n.LinkIndex], fakeFDB{mac: c.HardwareAddr, dst: ip})
	return nil
}

// NeighDel implements Host. For the FDB, a nil IP deletes every remote of
// the MAC.
func (f *Fake) NeighDel(n *netlink.Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	dev := f.name(n.LinkIndex)
	ip, _ := netip.AddrFromSlice(n.IP)
	ip = ip.Unmap()
	if n.Family != unix.AF_BRIDGE {
		if !neighFamilyOK(n.Family, ip) {
			return fmt.Errorf("fake: neigh %s in family %d: %w", ip, n.Family, unix.EINVAL)
		}
		if _, ok := f.neighs[n.LinkIndex][ip]; !ok {
			return fmt.Errorf("neigh %s dev %s: %w", ip, dev, unix.ENOENT)
		}
		if err := f.begin(fmt.Sprintf("neigh del %s dev %s", ip, dev)); err != nil {
			return err
		}
		delete(f.neighs[n.LinkIndex], ip)
		return nil
	}
	match := func(e fakeFDB) bool {
		return bytes.Equal(e.mac, n.HardwareAddr) && (!ip.IsValid() || e.dst == ip)
	}
	if !slices.ContainsFunc(f.fdb[n.LinkIndex], match) {
		return fmt.Errorf("fdb %s dst %s dev %s: %w", n.HardwareAddr, ip, dev, unix.ENOENT)
	}
	if err := f.begin(fmt.Sprintf("fdb del %s dev %s self dst %s", n.HardwareAddr, dev, ip)); err != nil {
		return err
	}
	f.fdb[n.LinkIndex] = slices.DeleteFunc(f.fdb[n.LinkIndex], match)
	return nil
}

// SetNeighState changes a neighbour's NUD state without recording an op (the
// kernel ageing an entry).
func (f *Fake) SetNeighState(linkIndex int, ip netip.Addr, state int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n, ok := f.neighs[linkIndex][ip]; ok {
		n.State = state
		f.neighs[linkIndex][ip] = n
	}
}

// NeighList implements Host.
func (f *Fake) NeighList(linkIndex, family int) ([]netlink.Neigh, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	what := "neighbours"
	if family == unix.AF_BRIDGE {
		what = "fdb"
	}
	return fakeDump(f, what, func() []netlink.Neigh { return f.neighList(linkIndex, family) })
}

// neighList lists what NeighList returns; callers hold f.mu.
func (f *Fake) neighList(linkIndex, family int) []netlink.Neigh {
	var res []netlink.Neigh
	for idx := range f.links {
		if linkIndex != 0 && idx != linkIndex {
			continue
		}
		if family == unix.AF_BRIDGE {
			for _, e := range f.fdb[idx] {
				res = append(res, netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
					Flags: netlink.NTF_SELF, HardwareAddr: slices.Clone(e.mac), IP: e.dst.AsSlice()})
			}
			continue
		}
		for ip, n := range f.neighs[idx] {
			if !inFamily(family, ip) {
				continue
			}
			n.HardwareAddr = slices.Clone(n.HardwareAddr)
			res = append(res, n)
		}
	}
	return res
}

func (f *Fake) routeLine(verb string, r *netlink.Route) string {
	s := fmt.Sprintf("route %s%s", verb, r.Dst)
	if r.Gw != nil {
		s += " via " + r.Gw.String()
	}
	s += " dev " + f.name(r.LinkIndex)
	if r.Protocol != unix.RTPROT_BOOT { // as iproute2 shows it
		s += " proto " + ProtoName(uint8(r.Protocol))
	}
	if r.Scope == netlink.SCOPE_LINK {
		s += " scope link"
	}
	if r.Flags&int(netlink.FLAG_ONLINK) != 0 {
		s += " onlink"
	}
	if r.Priority != 0 {
		s += fmt.Sprintf(" metric %d", r.Priority)
	}
	return s
}

// RouteReplace implements Host: it replaces the main-table route to the
// same destination at the same metric, whatever its protocol. A route given
// without a protocol gets boot, as the netlink library sends it; an IPv6
// route given metric 0 gets 1024, as the kernel stores it. A gateway must be
// on-link: through a connected prefix of the link, or flagged onlink.
func (f *Fake) RouteReplace(r *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.links[r.LinkIndex]; !ok {
		return notFound(fmt.Sprintf("link index %d", r.LinkIndex))
	}
	dst, ok := IPNetPrefix(r.Dst)
	if !ok {
		return fmt.Errorf("fake: route without destination: %w", unix.EINVAL)
	}
	if gw, ok := netip.AddrFromSlice(r.Gw); ok && r.Flags&int(netlink.FLAG_ONLINK) == 0 {
		if !slices.ContainsFunc(f.addrs[r.LinkIndex], func(a fakeAddr) bool {
			return a.p.Bits() < a.p.Addr().BitLen() && a.p.Contains(gw.Unmap())
		}) {
			return fmt.Errorf("route %s via %s: %w", dst, gw, unix.ENETUNREACH)
		}
	}
	c := *r
	if c.Protocol == 0 {
		c.Protocol = unix.RTPROT_BOOT
	}
	if dst.Addr().Is6() && c.Priority == 0 {
		c.Priority = ip6DefaultMetric
	}
	if err := f.begin(f.routeLine("replace ", &c)); err != nil {
		return err
	}
	c.Dst = PrefixIPNet(dst)
	c.Gw = slices.Clone(r.Gw)
	c.Table = unix.RT_TABLE_MAIN
	c.Type = unix.RTN_UNICAST
	f.routes = slices.DeleteFunc(f.routes, func(o netlink.Route) bool { return sameIPNet(o.Dst, c.Dst) && o.Priority == c.Priority })
	f.routes = append(f.routes, c)
	return nil
}

// ip6DefaultMetric is the metric the kernel gives an IPv6 route added
// without one (IP6_RT_PRIO_USER).
const ip6DefaultMetric = 1024

// RouteDel implements Host: it matches the destination and, when given,
// the gateway, the link and the protocol, like the kernel; among the
// matches, the one with the lowest metric at or above the given one (the
// kernel walks a destination's routes in metric order from there).
func (f *Fake) RouteDel(r *netlink.Route) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := -1
	for j, o := range f.routes {
		if sameIPNet(o.Dst, r.Dst) && (r.Gw == nil || o.Gw.Equal(r.Gw)) &&
			(r.LinkIndex == 0 || o.LinkIndex == r.LinkIndex) && (r.Protocol == 0 || o.Protocol == r.Protocol) &&
			o.Priority >= r.Priority &&
			(i < 0 || o.Priority < f.routes[i].Priority) {
			i = j
		}
	}
	if i < 0 {
		return fmt.Errorf("route %s: %w", r.Dst, unix.ESRCH)
	}
	if err := f.begin(f.routeLine("del ", &f.routes[i])); err != nil {
		return err
	}
	f.routes = slices.Delete(f.routes, i, i+1)
	return nil
}

// sameIPNet compares two destinations as their String forms would, without
// rendering them.
func sameIPNet(a, b *net.IPNet) bool {
	pa, okA := IPNetPrefix(a)
	pb, okB := IPNetPrefix(b)
	if !okA || !okB {
		return a.String() == b.String()
	}
	return pa == pb
}

// RouteListFiltered implements Host for the main table, honouring the
// family (AF_UNSPEC: all) and RT_FILTER_OIF.
func (f *Fake) RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fakeDump(f, "routes", func() []netlink.Route {
		var res []netlink.Route
		for _, r := range f.routes {
			if filter != nil && mask&netlink.RT_FILTER_OIF != 0 && r.LinkIndex != filter.LinkIndex {
				continue
			}
			if dst, ok := IPNetPrefix(r.Dst); ok && !inFamily(family, dst.Addr()) {
				continue
			}
			c := r
			c.Gw = slices.Clone(r.Gw)
			res = append(res, c)
		}
		return res
	})
}

// RouteGet implements Host: a longest-prefix match over local addresses,
// connected prefixes and routes.
func (f *Fake) RouteGet(dst net.IP) ([]netlink.Route, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ip, ok := netip.AddrFromSlice(dst)
	if !ok {
		return nil, unix.EINVAL
	}
	ip = ip.Unmap()
	best, bits := netlink.Route{}, -1
	consider := func(p netip.Prefix, r netlink.Route) {
		if p.Contains(ip) && p.Bits() > bits {
			best, bits = r, p.Bits()
		}
	}
	for idx, as := range f.addrs {
		for _, a := range as {
			p := a.p
			consider(netip.PrefixFrom(p.Addr(), p.Addr().BitLen()), netlink.Route{LinkIndex: idx, Type: unix.RTN_LOCAL})
			if p.Bits() < p.Addr().BitLen() {
				consider(p.Masked(), netlink.Route{LinkIndex: idx, Type: unix.RTN_UNICAST})
			}
		}
	}
	for _, r := range f.routes {
		p, _ := IPNetPrefix(r.Dst)
		consider(p, r)
	}
	if bits < 0 {
		return nil, fmt.Errorf("route to %s: %w", ip, unix.ENETUNREACH)
	}
	best.Dst = PrefixIPNet(netip.PrefixFrom(ip, ip.BitLen()))
	return []netlink.Route{best}, nil
}

// WriteSysctl implements Host. Per-device keys fail with ENOENT for a
// link that does not exist, as /proc/sys does ("default" is not a link, but
// exists).
func (f *Fake) WriteSysctl(key, value string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.sysctlExists(key) {
		return fmt.Errorf("sysctl %s: %w", key, unix.ENOENT)
	}
	if err := f.begin(fmt.Sprintf("sysctl %s = %s", key, value)); err != nil {
		return err
	}
	f.sysctls[key] = value
	return nil
}

// newDeviceIPv6 is how the kernel configures IPv6 on a new device
// (net/ipv6/conf/default/<key> unless that was changed).
var newDeviceIPv6 = map[string]string{"accept_ra": "1", "forwarding": "0", "disable_ipv6": "0"}

// ReadSysctl implements Host. A key never written reads as the
// kernel has it: a per-device IPv6 key in newDeviceIPv6 as the "default"
// device's; any other unwritten key fails with ENOENT, as do keys of links
// that do not exist.
func (f *Fake) ReadSysctl(key string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.sysctlExists(key) {
		return "", fmt.Errorf("sysctl %s: %w", key, unix.ENOENT)
	}
	if v, ok := f.sysctls[key]; ok {
		return v, nil
	}
	parts := strings.Split(key, "/")
	if len(parts) == 5 && parts[2] == "neigh" && parts[4] == "app_solicit" {
		family := map[string]int{"ipv4": unix.AF_INET, "ipv6": unix.AF_INET6}[parts[1]]
		if idx, ok := f.byName(parts[3]); ok {
			if v, ok := f.appSol[neighTable{idx, family}]; ok {
				return strconv.Itoa(v), nil
			}
		}
	}
	if len(parts) == 5 && parts[1] == "ipv6" && parts[2] == "conf" {
		if v, ok := f.sysctls["net/ipv6/conf/default/"+parts[4]]; ok {
			return v, nil
		}
		if v, ok := newDeviceIPv6[parts[4]]; ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("sysctl %s: %w", key, unix.ENOENT)
}

// sysctlExists reports whether the device a per-device key names exists;
// callers hold f.mu.
func (f *Fake) sysctlExists(key string) bool {
	parts := strings.Split(key, "/")
	if len(parts) != 5 || (parts[2] != "neigh" && parts[2] != "conf") || parts[3] == "default" {
		return true
	}
	_, ok := f.byName(parts[3])
	return ok
}

// SetAppSolicit implements Host. It is recorded as a neighbour-table line,
// what production sends: "neightbl flannel.1 app_solicit 3" for the IPv4
// (ARP) table, "neightbl flannel-v6.1 ndisc app_solicit 3" for the IPv6
// (NDP) one. It shows in ReadSysctl of net/ipv4/neigh/<dev>/app_solicit or
// net/ipv6/neigh/<dev>/app_solicit, as in /proc/sys. Any other family fails
// with EAFNOSUPPORT.
func (f *Fake) SetAppSolicit(family, ifindex, probes int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if family != unix.AF_INET && family != unix.AF_INET6 {
		return fmt.Errorf("fake: neighbour table of family %d: %w", family, unix.EAFNOSUPPORT)
	}
	if _, ok := f.links[ifindex]; !ok {
		return notFound(fmt.Sprintf("link index %d", ifindex))
	}
	k := neighTable{ifindex, family}
	if err := f.begin(f.neightblLine(k, probes)); err != nil {
		return err
	}
	f.appSol[k] = probes
	return nil
}

// neightblLine renders app_solicit in one neighbour table; callers hold f.mu.
func (f *Fake) neightblLine(k neighTable, probes int) string {
	table := ""
	if k.family == unix.AF_INET6 {
		table = " ndisc"
	}
	return fmt.Sprintf("neightbl %s%s app_solicit %d", f.name(k.ifindex), table, probes)
}

// SubscribeNeigh implements Host; events come from EmitNeigh. onErr runs
// with the Fake locked, so it must not call the Fake.
func (f *Fake) SubscribeNeigh(ctx context.Context, onErr func(error)) (<-chan netlink.NeighUpdate, error) {
	return subscribe(ctx, f, &f.neighSub, onErr), nil
}

// SubscribeLinks implements Host; every link change is delivered.
func (f *Fake) SubscribeLinks(ctx context.Context, onErr func(error)) (<-chan netlink.LinkUpdate, error) {
	return subscribe(ctx, f, &f.linkSub, onErr), nil
}

func subscribe[T any](ctx context.Context, f *Fake, subs *[]*fakeSub[T], onErr func(error)) <-chan T {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &fakeSub[T]{ch: make(chan T, subBuffer), onErr: onErr, ctx: ctx}
	*subs = append(*subs, s)
	context.AfterFunc(ctx, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		endSub(subs, s, nil)
	})
	return s.ch
}

// endSub closes a subscription's channel once, telling its onErr why unless
// its context ended (err nil: it did); callers hold f.mu.
func endSub[T any](subs *[]*fakeSub[T], s *fakeSub[T], err error) {
	if !s.closed {
		s.closed = true
		if err != nil && s.onErr != nil && s.ctx.Err() == nil {
			s.onErr(err)
		}
		close(s.ch)
	}
	*subs = slices.DeleteFunc(*subs, func(o *fakeSub[T]) bool { return o == s })
}

// deliver sends u to every subscriber without blocking; a subscriber whose
// queue is full loses its subscription, as with ENOBUFS.
func deliver[T any](subs *[]*fakeSub[T], u T) {
	for _, s := range slices.Clone(*subs) {
		select {
		case s.ch <- u:
		default:
			endSub(subs, s, fmt.Errorf("fake: subscription queue full: %w", unix.ENOBUFS))
		}
	}
}

// EmitNeigh delivers a neighbour update (e.g. a miss) to the subscribers.
func (f *Fake) EmitNeigh(u netlink.NeighUpdate) {
	f.mu.Lock()
	defer f.mu.Unlock()
	deliver(&f.neighSub, u)
}

// EndSubscriptions ends every subscription, as a decode error or ENOBUFS
// does; each subscriber's onErr is told.
func (f *Fake) EndSubscriptions() {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := fmt.Errorf("fake: subscription ended: %w", unix.ENOBUFS)
	for _, s := range slices.Clone(f.neighSub) {
		endSub(&f.neighSub, s, err)
	}
	for _, s := range slices.Clone(f.linkSub) {
		endSub(&f.linkSub, s, err)
	}
}

func (f *Fake) emitLink(t uint16, l netlink.Link) {
	c, err := copyLink(l)
	if err != nil {
		return
	}
	u := netlink.LinkUpdate{Link: c}
	u.Header.Type = t
	deliver(&f.linkSub, u)
}

// String renders the whole state as sorted lines.
func (f *Fake) String() string { return f.Lines() }

// Lines renders the state as sorted lines, keeping only the kinds named
// ("link", "addr", "neigh", "fdb", "route", "sysctl", "neightbl"; none =
// all).
func (f *Fake) Lines(kinds ...string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var lines []string
	for _, l := range f.links {
		s := "link " + f.describe(l) + " mac " + l.Attrs().HardwareAddr.String()
		if l.Attrs().Flags&net.FlagUp != 0 {
			s += " up"
		}
		lines = append(lines, s)
		for _, a := range f.addrs[l.Attrs().Index] {
			lines = append(lines, fmt.Sprintf("addr %s dev %s%s", a.p, l.Attrs().Name, addrFlagsText(a.flags)))
		}
	}
	for idx, ns := range f.neighs {
		for _, n := range ns {
			lines = append(lines, neighLine("", &n, f.name(idx)))
		}
	}
	for idx, es := range f.fdb {
		for _, e := range es {
			lines = append(lines, fmt.Sprintf("fdb %s dev %s self dst %s permanent", e.mac, f.name(idx), e.dst))
		}
	}
	for i := range f.routes {
		lines = append(lines, f.routeLine("", &f.routes[i]))
	}
	for k, v := range f.sysctls {
		lines = append(lines, fmt.Sprintf("sysctl %s = %s", k, v))
	}
	for k, v := range f.appSol {
		lines = append(lines, f.neightblLine(k, v))
	}
	lines = slices.DeleteFunc(lines, func(s string) bool {
		return len(kinds) > 0 && !slices.Contains(kinds, strings.Fields(s)[0])
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// ProtoName names a route protocol as iproute2 does without its
// configuration files: the kernel's own by name, any other by number.
func ProtoName(p uint8) string {
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
	}
	return strconv.Itoa(int(p))
}
