package backend

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Subscriptions cannot go through the Netlink seam (a *netlink.Handle has no
// subscribe methods), so this file talks to the kernel directly, in the
// namespace Config.NetNSPath names, unless the Netlink is a Subscriber (the
// Fake). The miss decisions themselves live in miss.go.

const rtmDelLink = unix.RTM_DELLINK

// subBuffer is the Go-side queue of a subscription; rcvBuf the socket
// receive buffer asked for, so a burst of misses does not end the
// subscription with ENOBUFS.
const (
	subBuffer = 4096
	rcvBuf    = 4 << 20
)

// subscribeNeigh subscribes to neighbour events; stop ends the subscription,
// after which ch is closed.
func (v *kernel) subscribeNeigh(ctx context.Context) (<-chan netlink.NeighUpdate, func(), error) {
	ch := make(chan netlink.NeighUpdate, subBuffer)
	done := make(chan struct{})
	var err error
	if s, ok := v.nl.(Subscriber); ok {
		err = s.NeighSubscribe(ch, done)
	} else {
		err = v.withNS(func(h *netns.NsHandle) error {
			return netlink.NeighSubscribeWithOptions(ch, done, netlink.NeighSubscribeOptions{
				Namespace:         h,
				ErrorCallback:     v.subscriptionError(ctx, done, "neighbour"),
				ReceiveBufferSize: rcvBuf,
				// SO_RCVBUFFORCE (past rmem_max) needs CAP_NET_ADMIN;
				// without it the size is capped at rmem_max.
				ReceiveBufferForceSize: os.Geteuid() == 0,
			})
		})
	}
	if err != nil {
		close(done)
		return nil, nil, fmt.Errorf("subscribe to neighbour events: %w", err)
	}
	return ch, stopper(done, ch), nil
}

// subscribeLink subscribes to link events; stop works as for subscribeNeigh.
func (v *kernel) subscribeLink(ctx context.Context) (<-chan netlink.LinkUpdate, func(), error) {
	ch := make(chan netlink.LinkUpdate, subBuffer)
	done := make(chan struct{})
	var err error
	if s, ok := v.nl.(Subscriber); ok {
		err = s.LinkSubscribe(ch, done)
	} else {
		err = v.withNS(func(h *netns.NsHandle) error {
			return netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
				Namespace:     h,
				ErrorCallback: v.subscriptionError(ctx, done, "link"),
			})
		})
	}
	if err != nil {
		close(done)
		return nil, nil, fmt.Errorf("subscribe to link events: %w", err)
	}
	return ch, stopper(done, ch), nil
}

// stopper returns a func that ends the subscription (closes done) once. The
// subscription then closes ch; callers keep ranging over ch until it does, so
// the sender never blocks.
func stopper[T any](done chan struct{}, _ <-chan T) func() {
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}

// withNS opens the configured namespace for the duration of f (nil handle =
// the current namespace).
func (v *kernel) withNS(f func(*netns.NsHandle) error) error {
	if v.cfg.NetNSPath == "" {
		return f(nil)
	}
	h, err := netns.GetFromPath(v.cfg.NetNSPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", v.cfg.NetNSPath, err)
	}
	defer h.Close() // the subscription socket keeps its namespace
	return f(&h)
}

// missNetlink returns the handle miss answers are written through, and a func
// that releases it. When the datapath's Netlink is a *netlink.Handle, misses
// get a handle of their own in the same namespace: the library serialises the
// requests of one socket, so answers would otherwise wait behind a bulk
// SetPeers or a reconcile dump. Any other Netlink (the Fake, a wrapper in
// tests) is used as it is, as is the shared handle if a second cannot be
// opened.
func (v *kernel) missNetlink() (Netlink, func()) {
	if _, ok := v.nl.(*netlink.Handle); !ok {
		return v.nl, func() {}
	}
	var h *netlink.Handle
	err := v.withNS(func(ns *netns.NsHandle) error {
		at := netns.None() // the current namespace
		if ns != nil {
			at = *ns
		}
		var err error
		h, err = netlink.NewHandleAt(at, unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		v.log.Warn("cannot open a netlink handle for miss answers; sharing the datapath's", "err", err)
		return v.nl, func() {}
	}
	return h, h.Close
}

// subscriptionError logs why a subscription ended, unless we ended it.
func (v *kernel) subscriptionError(ctx context.Context, done <-chan struct{}, what string) func(error) {
	return func(err error) {
		select {
		case <-done:
			return
		default:
		}
		if ctx.Err() != nil {
			return
		}
		v.log.Warn("subscription error", "subscription", what, "err", err)
	}
}
