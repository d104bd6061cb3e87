package backend

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Netlink is the subset of *netlink.Handle the datapath uses. Production
// passes netlink.NewHandle() or netlink.NewHandleAt(ns); tests pass the
// recording Fake. Nothing in this package calls package-level netlink.X.
type Netlink interface {
	LinkAdd(netlink.Link) error
	LinkDel(netlink.Link) error
	LinkByName(string) (netlink.Link, error)
	LinkByIndex(int) (netlink.Link, error)
	LinkSetUp(netlink.Link) error
	LinkSetMTU(netlink.Link, int) error
	LinkSetHardwareAddr(netlink.Link, net.HardwareAddr) error
	LinkSetIP6AddrGenMode(netlink.Link, int) error
	AddrReplace(netlink.Link, *netlink.Addr) error
	AddrDel(netlink.Link, *netlink.Addr) error
	AddrList(netlink.Link, int) ([]netlink.Addr, error)
	NeighSet(*netlink.Neigh) error
	NeighDel(*netlink.Neigh) error
	NeighList(linkIndex, family int) ([]netlink.Neigh, error)
	RouteReplace(*netlink.Route) error
	RouteDel(*netlink.Route) error
	RouteListFiltered(family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error)
	RouteGet(net.IP) ([]netlink.Route, error)
}

var _ Netlink = (*netlink.Handle)(nil)

// SysctlWriter is implemented by a Netlink that also owns the sysctls of its
// namespace (the Fake). For any other Netlink, sysctls are written and read
// under /proc/sys/net inside Config.NetNSPath.
type SysctlWriter interface {
	// WriteSysctl sets key (relative to /proc/sys, e.g.
	// "net/ipv4/neigh/flannel.1/app_solicit") to value.
	WriteSysctl(key, value string) error
	// ReadSysctl returns the value of key, as /proc/sys shows it.
	ReadSysctl(key string) (string, error)
}

// Subscriber is implemented by a Netlink that delivers its own events (the
// Fake). For any other Netlink, Run subscribes to the kernel in
// Config.NetNSPath. Both calls follow netlink's contract: ch is closed when the
// subscription ends, which is when done is closed or on an error.
type Subscriber interface {
	NeighSubscribe(ch chan<- netlink.NeighUpdate, done <-chan struct{}) error
	LinkSubscribe(ch chan<- netlink.LinkUpdate, done <-chan struct{}) error
}

// Sentinel errors callers may branch on.
var (
	// ErrNoDevice: the VXLAN device has not been ensured yet (call EnsureDevice).
	ErrNoDevice = errors.New("vxlan device not ensured")
	// ErrInvalidPeer: a Peer failed validation; it is skipped.
	ErrInvalidPeer = errors.New("invalid peer")
	// ErrInvalidConfig: Config failed validation in New.
	ErrInvalidConfig = errors.New("invalid backend config")
)

// dumpAttempts bounds retries of a dump interrupted by a concurrent change.
const dumpAttempts = 5

// listRetry runs a netlink dump, retrying while the kernel reports the dump
// was interrupted (NLM_F_DUMP_INTR: the table changed during the dump, so the
// partial result may be inconsistent). Same idea as plugins' netlinksafe.
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

// isLinkNotFound reports whether err means "no such link".
func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

// isGone reports whether a delete failed only because the entry is already
// absent, which for a delete counts as success.
func isGone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) ||
		errors.Is(err, unix.EADDRNOTAVAIL) || isLinkNotFound(err)
}
