package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/test/lab"
)

// nlEvent is one rtnetlink notification seen in a node netns, stamped when
// the monitor received it (the kernel puts no timestamp on netlink messages).
type nlEvent struct {
	at    time.Time
	typ   uint16         // RTM_NEWNEIGH, RTM_GETNEIGH (a miss), RTM_DELNEIGH, RTM_NEWROUTE, RTM_DELROUTE
	neigh *netlink.Neigh // neighbour and FDB (Family AF_BRIDGE) events
	route *netlink.Route
}

// isNeigh reports a neighbour or FDB event of type typ and family.
func (e nlEvent) isNeigh(typ uint16, family int) bool {
	return e.neigh != nil && e.typ == typ && e.neigh.Family == family
}

// neighIP is the event's neighbour address (invalid if none).
func (e nlEvent) neighIP() netip.Addr {
	if e.neigh == nil {
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(e.neigh.IP)
	return a.Unmap()
}

// routeDst is a route event's destination (invalid if none).
func (e nlEvent) routeDst() netip.Prefix {
	if e.route == nil || e.route.Dst == nil {
		return netip.Prefix{}
	}
	a, ok := netip.AddrFromSlice(e.route.Dst.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, _ := e.route.Dst.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

// nlMonitor subscribes to neighbour and/or IPv4 route notifications inside a
// namespace, the way an observer on the node would, and merges them into one
// channel. A lost subscription (ENOBUFS, decode error) is reported by Err:
// the figure using it then fails instead of reporting a partial number.
type nlMonitor struct {
	Events chan nlEvent
	done   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once

	mu  sync.Mutex
	err error
}

// monRcvBuf is the socket buffer asked for (forced: we run as root), so a
// burst of thousands of route notifications is not dropped.
const monRcvBuf = 64 << 20

// startMonitor subscribes in ns; the caller must call stop.
func startMonitor(ns *lab.NetNS, neigh, route bool) (*nlMonitor, error) {
	h, err := netns.GetFromPath(ns.Path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", ns.Path, err)
	}
	defer h.Close() // each subscription socket keeps the namespace
	m := &nlMonitor{Events: make(chan nlEvent, 1<<16), done: make(chan struct{})}
	if neigh {
		ch := make(chan netlink.NeighUpdate, 1<<14)
		err := netlink.NeighSubscribeWithOptions(ch, m.done, netlink.NeighSubscribeOptions{
			Namespace: &h, ErrorCallback: m.fail, ReceiveBufferSize: monRcvBuf, ReceiveBufferForceSize: true,
		})
		if err != nil {
			m.stop()
			return nil, fmt.Errorf("subscribe to neighbour events in %s: %w", ns.Name, err)
		}
		m.wg.Add(1)
		go forwardLoop(m, ch, func(u netlink.NeighUpdate, at time.Time) nlEvent {
			return nlEvent{at: at, typ: u.Type, neigh: &u.Neigh}
		})
	}
	if route {
		if err := m.subscribeRoutes(ns, h); err != nil {
			m.stop()
			return nil, err
		}
	}
	return m, nil
}

func (m *nlMonitor) subscribeRoutes(ns *lab.NetNS, h netns.NsHandle) error {
	ch := make(chan netlink.RouteUpdate, 1<<14)
	err := netlink.RouteSubscribeWithOptions(ch, m.done, netlink.RouteSubscribeOptions{
		Namespace: &h, ErrorCallback: m.fail, ReceiveBufferSize: monRcvBuf, ReceiveBufferForceSize: true,
	})
	if err != nil {
		return fmt.Errorf("subscribe to route events in %s: %w", ns.Name, err)
	}
	m.wg.Add(1)
	go forwardLoop(m, ch, func(u netlink.RouteUpdate, at time.Time) nlEvent {
		return nlEvent{at: at, typ: u.Type, route: &u.Route}
	})
	return nil
}

// forwardLoop stamps and merges the updates of one subscription until it ends.
func forwardLoop[T any](m *nlMonitor, ch <-chan T, conv func(T, time.Time) nlEvent) {
	defer m.wg.Done()
	for u := range ch {
		ev := conv(u, time.Now())
		select {
		case m.Events <- ev:
		case <-m.done: // nobody reads any more; drain until the library closes ch
		}
	}
}

// fail records why a subscription ended (unless we ended it).
func (m *nlMonitor) fail(err error) {
	select {
	case <-m.done:
		return
	default:
	}
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err == nil {
		m.err = fmt.Errorf("netlink monitor: %w", err)
	}
}

// Err is the first subscription error (nil while every event was delivered).
func (m *nlMonitor) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// stop ends the subscriptions and waits for the forwarding goroutines.
func (m *nlMonitor) stop() {
	m.once.Do(func() { close(m.done) })
	m.wg.Wait()
}

// next waits for the next event until deadline; ok is false on timeout.
func (m *nlMonitor) next(deadline <-chan time.Time) (nlEvent, bool) {
	select {
	case ev := <-m.Events:
		return ev, true
	case <-deadline:
		return nlEvent{}, false
	}
}

// linkIndex looks a link up by name inside ns.
func linkIndex(ns *lab.NetNS, name string) (int, error) {
	h, err := ns.Handle()
	if err != nil {
		return 0, err
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return 0, fmt.Errorf("find %s in %s: %w", name, ns.Name, err)
	}
	return l.Attrs().Index, nil
}

// hwEqual compares a MAC from an event with ours.
func hwEqual(a, b net.HardwareAddr) bool { return a.String() == b.String() }

// afInet and afBridge are the neighbour families of ARP and FDB entries.
const (
	afInet   = unix.AF_INET
	afBridge = unix.AF_BRIDGE
)
