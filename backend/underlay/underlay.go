package underlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
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
	Ifaces     []string // --iface, repeatable: interface name or IP address; first match wins
	IfaceRegex []string // --iface-regex: regex on names or IPs
	CanReach   string   // --iface-can-reach: pick the interface the route to this IP uses
	PublicIP   string   // --public-ip: override the advertised IP (must parse)
}

// Underlay is the chosen interface and the addresses the node uses on it.
type Underlay struct {
	Name     string
	Index    int
	MTU      int
	IP       netip.Addr // the interface's IPv4 address
	PublicIP netip.Addr // advertised to peers: --public-ip, else IP
}

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
	ifaces   []string
	regexes  []*regexp.Regexp
	canReach netip.Addr // invalid = not set
	publicIP netip.Addr // invalid = not set
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
	if p.canReach, err = parseIPv4("--iface-can-reach", o.CanReach); err != nil {
		return p, err
	}
	if p.publicIP, err = parseIPv4("--public-ip", o.PublicIP); err != nil {
		return p, err
	}
	return p, nil
}

// parseIPv4 parses an optional IPv4 flag value ("" = not set).
func parseIPv4(flag, s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, fmt.Errorf("%w: %s %q: %w", ErrInvalidOptions, flag, s, err)
	}
	if a = a.Unmap(); !a.Is4() {
		return a, fmt.Errorf("%w: %s %s is not an IPv4 address", ErrInvalidOptions, flag, s)
	}
	return a, nil
}

// Find picks the underlay per flannel's rules (see doc.go): --iface entries in
// order, then --iface-regex, then --iface-can-reach, else (no selector given) the
// interface of the default route. It returns *NotFoundError when nothing matched,
// and a wrapped kernel error when netlink fails.
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
	u.PublicIP = u.IP
	if p.publicIP.IsValid() {
		u.PublicIP = p.publicIP
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
	return f.withFirstIPv4("--iface="+s, link)
}

// byIP finds the interface that holds address a.
func (f *finder) byIP(s string, a netip.Addr) (Underlay, bool, error) {
	if !usable(a) {
		f.miss("--iface=%s: not an IPv4 global unicast address", s)
		return Underlay{}, false, nil
	}
	addrs, err := f.nl.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return Underlay{}, false, fmt.Errorf("list IPv4 addresses: %w", err)
	}
	for _, ad := range addrs {
		if toAddr(ad.IP) != a {
			continue
		}
		link, err := f.nl.LinkByIndex(ad.LinkIndex)
		if err != nil {
			return Underlay{}, false, fmt.Errorf("look up interface %d holding %s: %w", ad.LinkIndex, a, err)
		}
		return fromLink(link, a), true, nil
	}
	f.miss("--iface=%s: no interface has this address", s)
	return Underlay{}, false, nil
}

// byRegex tries each regex in order: first against every interface's IPv4 global
// unicast addresses, then against interface names (interfaces in index order).
func (f *finder) byRegex(res []*regexp.Regexp) (Underlay, bool, error) {
	links, err := f.nl.LinkList()
	if err != nil {
		return Underlay{}, false, fmt.Errorf("list interfaces: %w", err)
	}
	addrs := make([][]netip.Addr, len(links))
	for i, l := range links {
		if addrs[i], err = f.ipv4s(l); err != nil {
			return Underlay{}, false, err
		}
	}
	for _, re := range res {
		for i, l := range links {
			for _, a := range addrs[i] {
				if re.MatchString(a.String()) {
					return fromLink(l, a), true, nil
				}
			}
		}
		var bare []string // names that match but carry no usable address
		for i, l := range links {
			if !re.MatchString(l.Attrs().Name) {
				continue
			}
			if len(addrs[i]) > 0 {
				return fromLink(l, addrs[i][0]), true, nil
			}
			bare = append(bare, l.Attrs().Name)
		}
		if len(bare) > 0 {
			f.miss("--iface-regex=%s: matches %s, without an IPv4 global unicast address", re, strings.Join(bare, ", "))
		} else {
			f.miss("--iface-regex=%s: matches no interface name or IPv4 address", re)
		}
	}
	return Underlay{}, false, nil
}

// byRoute picks the interface of the kernel's route to dst, preferring the route's
// source address.
func (f *finder) byRoute(dst netip.Addr) (Underlay, bool, error) {
	routes, err := f.nl.RouteGet(dst.AsSlice())
	if errors.Is(err, unix.ENETUNREACH) || (err == nil && len(routes) == 0) {
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
	if src := toAddr(routes[0].Src); usable(src) {
		return fromLink(link, src), true, nil
	}
	return f.withFirstIPv4("--iface-can-reach="+dst.String(), link)
}

// byDefaultRoute picks the interface of the main table's IPv4 default route with
// the lowest metric.
func (f *finder) byDefaultRoute() (Underlay, bool, error) {
	routes, err := f.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return Underlay{}, false, fmt.Errorf("list IPv4 routes: %w", err)
	}
	idx, ok := defaultLinkIndex(routes)
	if !ok {
		f.miss("default route: none in the main table (use --iface, --iface-regex or --iface-can-reach)")
		return Underlay{}, false, nil
	}
	link, err := f.nl.LinkByIndex(idx)
	if err != nil {
		return Underlay{}, false, fmt.Errorf("look up interface %d of the default route: %w", idx, err)
	}
	return f.withFirstIPv4("default route", link)
}

// defaultLinkIndex returns the interface of the lowest-metric IPv4 default route
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

// withFirstIPv4 returns link with its first IPv4 global unicast address.
func (f *finder) withFirstIPv4(what string, link netlink.Link) (Underlay, bool, error) {
	addrs, err := f.ipv4s(link)
	if err != nil {
		return Underlay{}, false, err
	}
	if len(addrs) == 0 {
		f.miss("%s: interface %s has no IPv4 global unicast address", what, link.Attrs().Name)
		return Underlay{}, false, nil
	}
	return fromLink(link, addrs[0]), true, nil
}

// ipv4s lists link's IPv4 global unicast addresses in kernel order.
func (f *finder) ipv4s(link netlink.Link) ([]netip.Addr, error) {
	addrs, err := f.nl.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list IPv4 addresses of %s: %w", link.Attrs().Name, err)
	}
	var out []netip.Addr
	for _, ad := range addrs {
		if a := toAddr(ad.IP); usable(a) {
			out = append(out, a)
		}
	}
	return out, nil
}

func fromLink(link netlink.Link, ip netip.Addr) Underlay {
	at := link.Attrs()
	return Underlay{Name: at.Name, Index: at.Index, MTU: at.MTU, IP: ip}
}

func toAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// usable reports whether a can be an underlay address: IPv4 global unicast
// (private ranges included; loopback, link-local and multicast excluded).
func usable(a netip.Addr) bool {
	return a.Is4() && a.IsGlobalUnicast()
}
