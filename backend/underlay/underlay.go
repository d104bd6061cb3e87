package underlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

// Handle is the part of a host.Host that Find reads through.
type Handle interface {
	LinkList() ([]netlink.Link, error)
	LinkByName(name string) (netlink.Link, error)
	LinkByIndex(index int) (netlink.Link, error)
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	RouteGet(destination net.IP) ([]netlink.Route, error)
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
}

var _ Handle = host.Host(nil)

// Options are the operator's choices (flannel's flags of the same names).
type Options struct {
	Ifaces     []string // --iface, repeatable: interface name or IP address (IPv4 or IPv6); first match wins
	IfaceRegex []string // --iface-regex: regex on names or IPs
	CanReach   string   // --iface-can-reach: pick the interface the route to this IP (IPv4 or IPv6) uses
	PublicIP   string   // --public-ip: override the advertised IPv4 address (must parse as IPv4)
	PublicIPv6 string   // --public-ipv6: override the advertised IPv6 address (must parse as IPv6)
}

// Underlay is the chosen interface and the addresses the node uses on it, per
// family. Either family's address may be absent (invalid): Find only needs one, and
// the caller checks the families its network config needs.
type Underlay struct {
	Name       string
	Index      int
	MTU        int
	IP         netip.Addr // the interface's IPv4 address
	PublicIP   netip.Addr // advertised to peers: --public-ip, else IP
	IPv6       netip.Addr // the interface's IPv6 address
	PublicIPv6 netip.Addr // advertised to peers: --public-ipv6, else IPv6
	// SkippedIPv6 lists the interface's IPv6 addresses that cannot be the underlay
	// address, with why (link-local, temporary, deprecated, tentative, DAD failed),
	// in kernel order: when IPv6 is absent it says why.
	SkippedIPv6 []SkippedAddr
}

// SkippedAddr is an address Find did not use, and why.
type SkippedAddr struct {
	Addr   netip.Addr
	Reason string
}

func (s SkippedAddr) String() string { return s.Addr.String() + ": " + s.Reason }

// Why the IPv6 addresses of an interface are skipped (SkippedAddr.Reason).
const (
	ReasonLinkLocal  = "link-local"
	ReasonNotGlobal  = "not a global unicast address"
	ReasonTemporary  = "temporary (privacy extensions) address"
	ReasonDeprecated = "deprecated (preferred lifetime 0)"
	ReasonTentative  = "tentative (duplicate address detection not finished)"
	ReasonDADFailed  = "duplicate address detection failed"
)

// ErrInvalidOptions is wrapped by errors about Options that cannot be parsed.
var ErrInvalidOptions = errors.New("invalid underlay options")

// ErrNotFound is matched (errors.Is) by a *NotFoundError.
var ErrNotFound = errors.New("no underlay interface found")

// NotFoundError says that no selector matched; Tried lists each attempt and why it
// failed, in the order tried.
type NotFoundError struct {
	Tried []string
}

func (e *NotFoundError) Error() string {
	return "no underlay interface found: tried " + strings.Join(e.Tried, "; ")
}

// Unwrap lets errors.Is(err, ErrNotFound) match.
func (e *NotFoundError) Unwrap() error { return ErrNotFound }

// parsed is Options after validation.
type parsed struct {
	ifaces     []string
	regexes    []*regexp.Regexp
	canReach   netip.Addr // invalid = not set
	publicIP   netip.Addr // invalid = not set
	publicIPv6 netip.Addr // invalid = not set
}

// Validate checks Options without touching the kernel.
func (o Options) Validate() error {
	_, err := o.parse()
	return err
}

func (o Options) parse() (parsed, error) {
	p := parsed{ifaces: o.Ifaces}
	for _, s := range o.Ifaces {
		if s == "" {
			return p, fmt.Errorf("%w: empty --iface", ErrInvalidOptions)
		}
	}
	for _, s := range o.IfaceRegex {
		re, err := regexp.Compile(s)
		if err != nil {
			return p, fmt.Errorf("%w: --iface-regex %q: %w", ErrInvalidOptions, s, err)
		}
		p.regexes = append(p.regexes, re)
	}
	var err error
	if p.canReach, err = parseIP("--iface-can-reach", o.CanReach, 0); err != nil {
		return p, err
	}
	if p.publicIP, err = parseIP("--public-ip", o.PublicIP, 4); err != nil {
		return p, err
	}
	if p.publicIPv6, err = parseIP("--public-ipv6", o.PublicIPv6, 6); err != nil {
		return p, err
	}
	return p, nil
}

// parseIP parses an optional IP flag value ("" = not set) of family 4 or 6 (0 =
// either). An IPv4-mapped IPv6 address is an IPv4 address.
func parseIP(flag, s string, family int) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, fmt.Errorf("%w: %s %q: %w", ErrInvalidOptions, flag, s, err)
	}
	if a.Zone() != "" {
		return a, fmt.Errorf("%w: %s %s has a zone", ErrInvalidOptions, flag, s)
	}
	a = a.Unmap()
	switch {
	case family == 4 && !a.Is4():
		return a, fmt.Errorf("%w: %s %s is not an IPv4 address", ErrInvalidOptions, flag, s)
	case family == 6 && !a.Is6():
		return a, fmt.Errorf("%w: %s %s is not an IPv6 address", ErrInvalidOptions, flag, s)
	}
	return a, nil
}

// Find picks the underlay per flannel's rules (see doc.go): --iface entries in
// order, then --iface-regex, then --iface-can-reach, else (no selector given) the
// interface holding --public-ip or --public-ipv6, else the interface of the IPv4
// default route, else of the IPv6 default route. An interface qualifies when it has
// a usable address of either family; the result carries both families' addresses
// when present. It returns *NotFoundError when nothing matched, and a wrapped kernel
// error when netlink fails.
func Find(nl Handle, o Options) (Underlay, error) {
	p, err := o.parse()
	if err != nil {
		return Underlay{}, err
	}
	f := &finder{nl: nl}
	u, ok, err := f.find(p)
	if err != nil {
		return Underlay{}, err
	}
	if !ok {
		return Underlay{}, &NotFoundError{Tried: f.tried}
	}
	u.PublicIP, u.PublicIPv6 = u.IP, u.IPv6
	if p.publicIP.IsValid() {
		u.PublicIP = p.publicIP
	}
	if p.publicIPv6.IsValid() {
		u.PublicIPv6 = p.publicIPv6
	}
	return u, nil
}

// finder runs the selectors and records why each one failed.
type finder struct {
	nl    Handle
	tried []string
}

func (f *finder) miss(format string, args ...any) {
	f.tried = append(f.tried, fmt.Sprintf(format, args...))
}

func (f *finder) find(p parsed) (Underlay, bool, error) {
	for _, s := range p.ifaces {
		if u, ok, err := f.byIface(s); ok || err != nil {
			return u, ok, err
		}
	}
	if len(p.regexes) > 0 {
		if u, ok, err := f.byRegex(p.regexes); ok || err != nil {
			return u, ok, err
		}
	}
	if p.canReach.IsValid() {
		if u, ok, err := f.byRoute(p.canReach); ok || err != nil {
			return u, ok, err
		}
	}
	if len(p.ifaces) > 0 || len(p.regexes) > 0 || p.canReach.IsValid() {
		return Underlay{}, false, nil
	}
	// No selector: a public address held by an interface picks it (flannel's
	// --public-ip alone); one held by none (a NAT's address) leaves the choice
	// to the default route.
	for _, a := range []netip.Addr{p.publicIP, p.publicIPv6} {
		if !a.IsValid() {
			continue
		}
		if u, ok, err := f.holding(a); ok || err != nil {
			return u, ok, err
		}
	}
	return f.byDefaultRoute()
}

// byIface handles one --iface entry: an IP address or an interface name.
func (f *finder) byIface(s string) (Underlay, bool, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return f.byIP(s, a.Unmap())
	}
	link, err := f.nl.LinkByName(s)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		f.miss("--iface=%s: no such interface", s)
		return Underlay{}, false, nil
	}
	if err != nil {
		return Underlay{}, false, fmt.Errorf("look up interface %q: %w", s, err)
	}
	return f.fromLink("--iface="+s, link, netip.Addr{})
}

// byIP finds the interface that holds address a, which must be usable.
func (f *finder) byIP(s string, a netip.Addr) (Underlay, bool, error) {
	ad, found, err := f.lookupAddr(a)
	if err != nil || !found {
		if err == nil {
			f.miss("--iface=%s: no interface has this address", s)
		}
		return Underlay{}, false, err
	}
	if why := skipReason(ad); why != "" {
		f.miss("--iface=%s: %s", s, why)
		return Underlay{}, false, nil
	}
	link, err := f.nl.LinkByIndex(ad.LinkIndex)
	if err != nil {
		return Underlay{}, false, fmt.Errorf("look up interface %d holding %s: %w", ad.LinkIndex, a, err)
	}
	return f.fromLink("--iface="+s, link, a)
}

// holding picks the interface that holds the public address a, if it is usable;
// ok is false (and nothing is recorded) when no interface holds it.
func (f *finder) holding(a netip.Addr) (Underlay, bool, error) {
	ad, found, err := f.lookupAddr(a)
	if err != nil || !found {
		return Underlay{}, false, err
	}
	link, err := f.nl.LinkByIndex(ad.LinkIndex)
	if err != nil {
		return Underlay{}, false, fmt.Errorf("look up interface %d holding %s: %w", ad.LinkIndex, a, err)
	}
	what := "public address " + a.String()
	if why := skipReason(ad); why != "" {
		f.miss("%s: on %s but %s", what, link.Attrs().Name, why)
		return Underlay{}, false, nil
	}
	return f.fromLink(what, link, a)
}

// lookupAddr finds a among every interface's addresses of its family.
func (f *finder) lookupAddr(a netip.Addr) (netlink.Addr, bool, error) {
	fam := netlink.FAMILY_V4
	if a.Is6() {
		fam = netlink.FAMILY_V6
	}
	addrs, err := f.nl.AddrList(nil, fam)
	if err != nil {
		return netlink.Addr{}, false, fmt.Errorf("list %s addresses: %w", famName(a), err)
	}
	for _, ad := range addrs {
		if toAddr(ad.IP) == a {
			return ad, true, nil
		}
	}
	return netlink.Addr{}, false, nil
}

// byRegex tries each regex in order: first against every interface's usable
// addresses (IPv4, then IPv6), then against interface names (interfaces in index
// order).
func (f *finder) byRegex(res []*regexp.Regexp) (Underlay, bool, error) {
	links, err := f.nl.LinkList()
	if err != nil {
		return Underlay{}, false, fmt.Errorf("list interfaces: %w", err)
	}
	addrs := make([]linkAddrs, len(links))
	for i, l := range links {
		if addrs[i], err = f.addrsOf(l); err != nil {
			return Underlay{}, false, err
		}
	}
	for _, re := range res {
		for i, l := range links {
			for _, a := range append(slices.Clone(addrs[i].v4), addrs[i].v6...) {
				if re.MatchString(a.String()) {
					return addrs[i].underlay(l, a), true, nil
				}
			}
		}
		var bare []string // names that match but carry no usable address
		for i, l := range links {
			if !re.MatchString(l.Attrs().Name) {
				continue
			}
			if addrs[i].any() {
				return addrs[i].underlay(l, netip.Addr{}), true, nil
			}
			bare = append(bare, l.Attrs().Name)
		}
		if len(bare) > 0 {
			f.miss("--iface-regex=%s: matches %s, without a usable IPv4 or IPv6 global unicast address", re, strings.Join(bare, ", "))
		} else {
			f.miss("--iface-regex=%s: matches no interface name or usable IPv4 or IPv6 address", re)
		}
	}
	return Underlay{}, false, nil
}

// byRoute picks the interface of the kernel's route to dst, preferring the route's
// source address.
func (f *finder) byRoute(dst netip.Addr) (Underlay, bool, error) {
	routes, err := f.nl.RouteGet(dst.AsSlice())
	if errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH) || (err == nil && len(routes) == 0) {
		f.miss("--iface-can-reach=%s: no route", dst)
		return Underlay{}, false, nil
	}
	if err != nil {
		return Underlay{}, false, fmt.Errorf("get route to %s: %w", dst, err)
	}
	link, err := f.nl.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return Underlay{}, false, fmt.Errorf("look up interface %d of the route to %s: %w", routes[0].LinkIndex, dst, err)
	}
	return f.fromLink("--iface-can-reach="+dst.String(), link, toAddr(routes[0].Src))
}

// byDefaultRoute picks the interface of the main table's IPv4 default route with
// the lowest metric, else (none, or its interface has no usable address) that of
// the IPv6 default route: an IPv6-only node has no IPv4 default route.
func (f *finder) byDefaultRoute() (Underlay, bool, error) {
	none := 0
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		name := "IPv4"
		if fam == netlink.FAMILY_V6 {
			name = "IPv6"
		}
		routes, err := f.nl.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return Underlay{}, false, fmt.Errorf("list %s routes: %w", name, err)
		}
		idx, ok := defaultLinkIndex(routes)
		if !ok {
			none++
			continue
		}
		link, err := f.nl.LinkByIndex(idx)
		if err != nil {
			return Underlay{}, false, fmt.Errorf("look up interface %d of the %s default route: %w", idx, name, err)
		}
		if u, ok, err := f.fromLink(name+" default route", link, netip.Addr{}); ok || err != nil {
			return u, ok, err
		}
	}
	if none == 2 {
		f.miss("default route: none in the main table, IPv4 or IPv6 (use --iface, --iface-regex or --iface-can-reach)")
	}
	return Underlay{}, false, nil
}

// defaultLinkIndex returns the interface of the lowest-metric default route
// (for a multipath route, its first next hop).
func defaultLinkIndex(routes []netlink.Route) (int, bool) {
	best, bestPrio, found := 0, 0, false
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		idx := r.LinkIndex
		if idx == 0 && len(r.MultiPath) > 0 {
			idx = r.MultiPath[0].LinkIndex
		}
		if idx == 0 || (found && r.Priority >= bestPrio) {
			continue
		}
		best, bestPrio, found = idx, r.Priority, true
	}
	return best, found
}

// fromLink returns link with its addresses (prefer, when usable, as its family's),
// or records a miss when it has no usable address of either family.
func (f *finder) fromLink(what string, link netlink.Link, prefer netip.Addr) (Underlay, bool, error) {
	la, err := f.addrsOf(link)
	if err != nil {
		return Underlay{}, false, err
	}
	if !la.any() {
		msg := fmt.Sprintf("%s: interface %s has no usable IPv4 or IPv6 global unicast address", what, link.Attrs().Name)
		if len(la.skipped) > 0 {
			var ss []string
			for _, s := range la.skipped {
				ss = append(ss, s.String())
			}
			msg += " (skipped " + strings.Join(ss, "; ") + ")"
		}
		f.miss("%s", msg)
		return Underlay{}, false, nil
	}
	return la.underlay(link, prefer), true, nil
}

// linkAddrs are an interface's usable addresses per family, best first, and its
// skipped IPv6 addresses.
type linkAddrs struct {
	v4, v6  []netip.Addr
	skipped []SkippedAddr
}

func (la linkAddrs) any() bool { return len(la.v4) > 0 || len(la.v6) > 0 }

// underlay returns link with la's best address of each family, or prefer for its
// family when prefer is one of la's usable addresses.
func (la linkAddrs) underlay(link netlink.Link, prefer netip.Addr) Underlay {
	at := link.Attrs()
	u := Underlay{Name: at.Name, Index: at.Index, MTU: at.MTU, SkippedIPv6: la.skipped}
	if len(la.v4) > 0 {
		u.IP = la.v4[0]
	}
	if len(la.v6) > 0 {
		u.IPv6 = la.v6[0]
	}
	switch {
	case slices.Contains(la.v4, prefer):
		u.IP = prefer
	case slices.Contains(la.v6, prefer):
		u.IPv6 = prefer
	}
	return u
}

// addrsOf lists link's usable addresses: IPv4 global unicast in kernel order; IPv6
// global unicast that is not temporary, deprecated, tentative or DAD-failed,
// permanent (static) ones before dynamic (SLAAC, DHCPv6) ones, otherwise in kernel
// order.
func (f *finder) addrsOf(link netlink.Link) (linkAddrs, error) {
	var la linkAddrs
	v4, err := f.nl.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return la, fmt.Errorf("list IPv4 addresses of %s: %w", link.Attrs().Name, err)
	}
	for _, ad := range v4 {
		if a := toAddr(ad.IP); a.Is4() && a.IsGlobalUnicast() {
			la.v4 = append(la.v4, a)
		}
	}
	v6, err := f.nl.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		return la, fmt.Errorf("list IPv6 addresses of %s: %w", link.Attrs().Name, err)
	}
	var dynamic []netip.Addr
	for _, ad := range v6 {
		a := toAddr(ad.IP)
		if why := skipReason(ad); why != "" {
			la.skipped = append(la.skipped, SkippedAddr{Addr: a, Reason: why})
			continue
		}
		if ad.Flags&unix.IFA_F_PERMANENT != 0 {
			la.v6 = append(la.v6, a)
		} else {
			dynamic = append(dynamic, a)
		}
	}
	la.v6 = append(la.v6, dynamic...)
	return la, nil
}

// skipReason says why ad cannot be an underlay address ("" = it can). IPv4: only
// global unicast counts. IPv6 (flannel#2045, #2293): a link-local or other
// non-global address, a temporary (privacy) address, which changes daily, and a
// deprecated, tentative or DAD-failed one, which the kernel does not use as a
// source, are skipped.
func skipReason(ad netlink.Addr) string {
	a := toAddr(ad.IP)
	if a.Is4() {
		if !a.IsGlobalUnicast() {
			return "not an IPv4 global unicast address"
		}
		return ""
	}
	switch {
	case a.IsLinkLocalUnicast():
		return ReasonLinkLocal
	case !a.IsGlobalUnicast() || ad.Scope != unix.RT_SCOPE_UNIVERSE:
		return ReasonNotGlobal
	case ad.Flags&unix.IFA_F_TEMPORARY != 0:
		return ReasonTemporary
	case ad.Flags&unix.IFA_F_DADFAILED != 0:
		return ReasonDADFailed
	case ad.Flags&unix.IFA_F_TENTATIVE != 0:
		return ReasonTentative
	case ad.Flags&unix.IFA_F_DEPRECATED != 0 || ad.PreferedLft == 0:
		return ReasonDeprecated
	}
	return ""
}

func famName(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

func toAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
