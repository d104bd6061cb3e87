package backend

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

// The kernel's events and the miss answers' connection come from the Host;
// the miss decisions themselves live in miss.go.

const rtmDelLink = unix.RTM_DELLINK

// subscribeNeigh subscribes to neighbour events; stop ends the subscription,
// after which ch is closed (callers keep ranging over ch until it is).
func (v *kernel) subscribeNeigh(ctx context.Context) (<-chan netlink.NeighUpdate, func(), error) {
	sctx, stop := context.WithCancel(ctx)
	ch, err := v.nl.SubscribeNeigh(sctx, v.subscriptionError("neighbour"))
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("subscribe to neighbour events: %w", err)
	}
	return ch, stop, nil
}

// subscribeLink subscribes to link events; stop works as for subscribeNeigh.
func (v *kernel) subscribeLink(ctx context.Context) (<-chan netlink.LinkUpdate, func(), error) {
	sctx, stop := context.WithCancel(ctx)
	ch, err := v.nl.SubscribeLinks(sctx, v.subscriptionError("link"))
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("subscribe to link events: %w", err)
	}
	return ch, stop, nil
}

// missNetlink returns the Host miss answers are written through, and a func
// that releases it: a clone of the datapath's, since a netlink socket
// serialises its requests and answers would otherwise wait behind a bulk
// SetPeers or a reconcile dump. If no clone can be opened, the datapath's
// own Host is shared.
func (v *kernel) missNetlink() (host.Host, func()) {
	h, err := v.nl.Clone()
	if err != nil {
		v.log.Warn("cannot open a second netlink connection for miss answers; sharing the datapath's", "err", err)
		return v.nl, func() {}
	}
	return h, func() {
		if err := h.Close(); err != nil {
			v.log.Debug("closing the miss answers' connection", "err", err)
		}
	}
}

// subscriptionError logs why a subscription failed (the Host reports no
// failure after we ended it).
func (v *kernel) subscriptionError(what string) func(error) {
	return func(err error) {
		v.log.Warn("subscription error", "subscription", what, "err", err)
	}
}
