package host

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is a network namespace opened by Open: the production Host.
type NS struct {
	path string // "" = the caller's namespace
	fd   int    // the namespace, kept open; -1 with path ""
	h    *netlink.Handle

	rtMu sync.Mutex       // serialises the hand-built requests (veth_linux.go)
	rt   *nl.SocketHandle // their socket, opened at the first
}

var _ Host = (*NS)(nil)

// rcvBuf is the socket receive buffer a neighbour subscription asks for, so
// a burst of misses does not end it with ENOBUFS.
const rcvBuf = 4 << 20

// Open opens a network namespace: "" is the caller's own (nothing is
// entered, so no capability beyond CAP_NET_ADMIN is needed), a path (e.g.
// /run/netns/x) is that namespace, held open by descriptor until Close.
// It opens one route netlink socket (every Host method speaks rtnetlink; the
// netlink library would otherwise open xfrm and netfilter sockets too, each
// with its own trip into the namespace).
func Open(nsPath string) (*NS, error) {
	if nsPath == "" {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return nil, fmt.Errorf("open netlink: %w", err)
		}
		return &NS{fd: -1, h: h}, nil
	}
	fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	n := &NS{path: nsPath, fd: fd}
	if n.h, err = n.newHandle(); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("open netlink in netns %s: %w", nsPath, err)
	}
	return n, nil
}

// newHandle opens a netlink handle (one route netlink socket) in n. The
// socket is opened from inside the namespace by Do, whose thread is handed
// back only once it is home again, rather than by the netlink library's own
// trip there and back, which would leave the thread in the namespace and
// unlocked if the way back failed.
func (n *NS) newHandle() (*netlink.Handle, error) {
	var h *netlink.Handle
	err := n.Do(func() (err error) {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	return h, err
}

// Path is the path n was opened with ("" = the caller's namespace).
func (n *NS) Path() string { return n.path }

// Fd is the descriptor of the namespace, or -1 for the caller's own. It is
// for host/nft, which hands it to the nftables library; it stays valid until
// Close.
func (n *NS) Fd() int { return n.fd }

// Close releases the netlink handle and the namespace descriptor; a second
// Close does nothing (the descriptors may have been reused by then).
func (n *NS) Close() error {
	if n.h == nil {
		return nil
	}
	n.rtMu.Lock()
	n.h.Close()
	n.h = nil
	if n.rt != nil {
		n.rt.Close()
		n.rt = nil
	}
	n.rtMu.Unlock()
	if n.fd >= 0 {
		if err := unix.Close(n.fd); err != nil {
			return fmt.Errorf("close netns %s: %w", n.path, err)
		}
		n.fd = -1
	}
	return nil
}

// Clone implements Host: a new netlink handle in the same namespace.
func (n *NS) Clone() (Host, error) {
	if n.fd < 0 {
		return Open("")
	}
	fd, err := unix.FcntlInt(uintptr(n.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("clone netns %s: %w", n.path, err)
	}
	c := &NS{path: n.path, fd: fd}
	if c.h, err = c.newHandle(); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("clone netlink in netns %s: %w", n.path, err)
	}
	return c, nil
}

// Do runs f on an OS thread inside the namespace, for what is bound to the
// calling thread's namespace: opening a socket, /proc/sys and
// /proc/thread-self/net. In the caller's own namespace f runs on the
// caller's goroutine with its thread locked. Otherwise setns moves only one
// thread: f runs on a new goroutine, locked to its thread, which then
// returns to its own namespace. Only a thread that made it back is handed
// back to the scheduler; one that did not stays locked and ends with the
// goroutine, so no other goroutine ever runs in the wrong namespace.
// (Ending every such thread instead would cost a thread creation per Do.)
func (n *NS) Do(f func() error) error {
	if n.fd < 0 {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		return f()
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Every thread the scheduler hands out is in the process's
		// namespace (Do returns only those), so this one's is home.
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer unix.Close(home)
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter netns %s: %w", n.path, err)
			return
		}
		ferr := f()
		if err := unix.Setns(home, unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("return from netns %s: %w", n.path, err)
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// ID identifies the namespace for as long as it exists: its cookie
// (SO_NETNS_COOKIE, Linux 5.14), never reused, or on older kernels its
// inode number, which is reused once the namespace is freed.
func (n *NS) ID() (uint64, error) {
	var cookie uint64
	err := n.Do(func() error {
		s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(s)
		cookie, err = unix.GetsockoptUint64(s, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	})
	if err == nil {
		return cookie, nil
	}
	var st unix.Stat_t
	if n.fd < 0 {
		err = unix.Stat("/proc/thread-self/ns/net", &st)
	} else {
		err = unix.Fstat(n.fd, &st)
	}
	if err != nil {
		return 0, fmt.Errorf("identify netns: %w", err)
	}
	return st.Ino, nil
}

// LinkList implements Host.
func (n *NS) LinkList() ([]netlink.Link, error) {
	return listRetry("links", n.h.LinkList)
}

// LinkByName implements Host.
func (n *NS) LinkByName(name string) (netlink.Link, error) { return n.h.LinkByName(name) }

// LinkByIndex implements Host.
func (n *NS) LinkByIndex(index int) (netlink.Link, error) { return n.h.LinkByIndex(index) }

// LinkAdd implements Host.
func (n *NS) LinkAdd(link netlink.Link) error { return n.h.LinkAdd(link) }

// LinkDel implements Host.
func (n *NS) LinkDel(link netlink.Link) error { return n.h.LinkDel(link) }

// LinkSetUp implements Host.
func (n *NS) LinkSetUp(link netlink.Link) error { return n.h.LinkSetUp(link) }

// LinkSetMTU implements Host.
func (n *NS) LinkSetMTU(link netlink.Link, mtu int) error { return n.h.LinkSetMTU(link, mtu) }

// LinkSetHardwareAddr implements Host.
func (n *NS) LinkSetHardwareAddr(link netlink.Link, hwaddr net.HardwareAddr) error {
	return n.h.LinkSetHardwareAddr(link, hwaddr)
}

// LinkSetIP6AddrGenMode implements Host.
func (n *NS) LinkSetIP6AddrGenMode(link netlink.Link, mode int) error {
	return n.h.LinkSetIP6AddrGenMode(link, mode)
}

// AddrList implements Host.
func (n *NS) AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	return listRetry("addresses", func() ([]netlink.Addr, error) { return n.h.AddrList(link, family) })
}

// AddrReplace implements Host.
func (n *NS) AddrReplace(link netlink.Link, addr *netlink.Addr) error {
	return n.h.AddrReplace(link, addr)
}

// AddrDel implements Host.
func (n *NS) AddrDel(link netlink.Link, addr *netlink.Addr) error { return n.h.AddrDel(link, addr) }

// NeighList implements Host.
func (n *NS) NeighList(linkIndex, family int) ([]netlink.Neigh, error) {
	what := "neighbours"
	if family == unix.AF_BRIDGE {
		what = "fdb"
	}
	return listRetry(what, func() ([]netlink.Neigh, error) { return n.h.NeighList(linkIndex, family) })
}

// NeighSet implements Host.
func (n *NS) NeighSet(neigh *netlink.Neigh) error { return n.h.NeighSet(neigh) }

// NeighDel implements Host.
func (n *NS) NeighDel(neigh *netlink.Neigh) error { return n.h.NeighDel(neigh) }

// RouteListFiltered implements Host.
func (n *NS) RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error) {
	return listRetry("routes", func() ([]netlink.Route, error) {
		return n.h.RouteListFiltered(family, filter, filterMask)
	})
}

// RouteReplace implements Host.
func (n *NS) RouteReplace(route *netlink.Route) error { return n.h.RouteReplace(route) }

// RouteDel implements Host.
func (n *NS) RouteDel(route *netlink.Route) error { return n.h.RouteDel(route) }

// RouteGet implements Host.
func (n *NS) RouteGet(destination net.IP) ([]netlink.Route, error) { return n.h.RouteGet(destination) }

// ReadSysctl implements Host. /proc/sys/net shows the namespace of the thread
// that opens it, hence Do. A failed read's error names the file.
func (n *NS) ReadSysctl(key string) (string, error) {
	var b []byte
	err := n.Do(func() (err error) {
		b, err = os.ReadFile(filepath.Join("/proc/sys", key))
		return err
	})
	return string(b), err
}

// WriteSysctl implements Host.
func (n *NS) WriteSysctl(key, value string) error {
	err := n.Do(func() error { return os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644) })
	if err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// nsHandle is the namespace for netlink's subscribe options (nil = the
// caller's).
func (n *NS) nsHandle() *netns.NsHandle {
	if n.fd < 0 {
		return nil
	}
	h := netns.NsHandle(n.fd)
	return &h
}

// SubscribeNeigh implements Host.
func (n *NS) SubscribeNeigh(ctx context.Context, onErr func(error)) (<-chan netlink.NeighUpdate, error) {
	ch := make(chan netlink.NeighUpdate, subBuffer)
	done, stop := endWith(ctx)
	err := netlink.NeighSubscribeWithOptions(ch, done, netlink.NeighSubscribeOptions{
		Namespace:         n.nsHandle(),
		ErrorCallback:     reportUnlessEnded(ctx, onErr),
		ReceiveBufferSize: rcvBuf,
		// SO_RCVBUFFORCE (past rmem_max) needs CAP_NET_ADMIN; without
		// it the size is capped at rmem_max.
		ReceiveBufferForceSize: os.Geteuid() == 0,
	})
	if err != nil {
		stop()
		return nil, fmt.Errorf("subscribe to neighbour events: %w", err)
	}
	return ch, nil
}

// SubscribeLinks implements Host.
func (n *NS) SubscribeLinks(ctx context.Context, onErr func(error)) (<-chan netlink.LinkUpdate, error) {
	ch := make(chan netlink.LinkUpdate, subBuffer)
	done, stop := endWith(ctx)
	err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
		Namespace:     n.nsHandle(),
		ErrorCallback: reportUnlessEnded(ctx, onErr),
	})
	if err != nil {
		stop()
		return nil, fmt.Errorf("subscribe to link events: %w", err)
	}
	return ch, nil
}

// endWith returns a channel closed when ctx ends (netlink's subscriptions
// end when their done channel closes, then close their event channel), and
// a func that forgets ctx, for a subscription that never started.
func endWith(ctx context.Context) (chan struct{}, func()) {
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { close(done) })
	return done, func() { stop() }
}

// reportUnlessEnded passes a subscription's failure to onErr, unless ctx
// ended it.
func reportUnlessEnded(ctx context.Context, onErr func(error)) func(error) {
	return func(err error) {
		if ctx.Err() == nil && onErr != nil {
			onErr(err)
		}
	}
}
