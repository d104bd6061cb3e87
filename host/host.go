package host

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Host is a network namespace at the datapath's level. The link, address,
// neighbour and route methods have the signatures of *netlink.Handle's
// methods of the same names, except that dumps are retried while
// interrupted.
type Host interface {
	LinkList() ([]netlink.Link, error)
	LinkByName(name string) (netlink.Link, error)
	LinkByIndex(index int) (netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
	LinkSetUp(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetHardwareAddr(link netlink.Link, hwaddr net.HardwareAddr) error
	LinkSetIP6AddrGenMode(link netlink.Link, mode int) error

	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrReplace(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error

	// NeighList lists neighbours (family AF_INET or AF_INET6) or FDB
	// entries (AF_BRIDGE) of linkIndex (0 = every link).
	NeighList(linkIndex, family int) ([]netlink.Neigh, error)
	NeighSet(neigh *netlink.Neigh) error
	NeighDel(neigh *netlink.Neigh) error

	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
	RouteGet(destination net.IP) ([]netlink.Route, error)

	// SetAppSolicit sets app_solicit (NDTPA_APP_PROBES) of link
	// ifindex in the neighbour table of family: AF_INET (ARP, the
	// kernel's "arp_cache") or AF_INET6 (NDP, "ndisc_cache"). It is how
	// many times the kernel asks userspace about an unresolved neighbour.
	SetAppSolicit(family, ifindex, probes int) error
	// ReadSysctl returns the value of key, relative to /proc/sys (e.g.
	// "net/ipv6/conf/flannel.1/accept_ra"), as the namespace shows it.
	ReadSysctl(key string) (string, error)
	// WriteSysctl sets key (relative to /proc/sys) to value.
	WriteSysctl(key, value string) error

	// SubscribeNeigh delivers neighbour events (including the misses the
	// kernel asks userspace about). The channel is closed when ctx ends or
	// the subscription fails; onErr (may be nil) is told why it failed,
	// unless ctx had ended.
	SubscribeNeigh(ctx context.Context, onErr func(error)) (<-chan netlink.NeighUpdate, error)
	// SubscribeLinks delivers link events, ending as SubscribeNeigh does.
	SubscribeLinks(ctx context.Context, onErr func(error)) (<-chan netlink.LinkUpdate, error)

	// Clone returns a second connection to the same namespace, for writes
	// that must not wait behind a bulk write or a dump on this one (each
	// netlink socket serialises its requests). The caller closes it.
	Clone() (Host, error)
	// Close releases the connection (and, for a namespace opened by path,
	// its descriptor).
	Close() error
}

// subBuffer is the Go-side queue of a subscription (NS's and the Fake's).
const subBuffer = 4096

// dumpAttempts bounds retries of a dump interrupted by a concurrent change.
const dumpAttempts = 5

// listRetry runs a netlink dump, retrying while the kernel reports the dump
// was interrupted (NLM_F_DUMP_INTR: the table changed during the dump, so the
// partial result may be inconsistent).
func listRetry[T any](what string, dump func() ([]T, error)) ([]T, error) {
	var err error
	for range dumpAttempts {
		var res []T
		res, err = dump()
		if err == nil {
			return res, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, fmt.Errorf("list %s: %w", what, err)
		}
	}
	return nil, fmt.Errorf("list %s: %d attempts: %w", what, dumpAttempts, err)
}

// IsLinkNotFound reports whether err means "no such link".
func IsLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// PrefixIPNet converts p to the *net.IPNet netlink takes.
func PrefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// IPNetPrefix converts a netlink *net.IPNet (IPv4 possibly in 16 bytes) to a
// prefix; ok is false for nil or a malformed mask.
func IPNetPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	if ip.Is4() && bits == 128 {
		ones -= 96
	}
	return netip.PrefixFrom(ip, ones), true
}
