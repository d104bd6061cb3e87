package backend

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"

	"github.com/weftnet/weft/host"
)

// lateLinkSub is a Fake whose first SubscribeLinks runs before() first: the
// window in which Run has no link subscription yet.
type lateLinkSub struct {
	*host.Fake
	once   sync.Once
	before func()
}

func (l *lateLinkSub) SubscribeLinks(ctx context.Context, onErr func(error)) (<-chan netlink.LinkUpdate, error) {
	l.once.Do(l.before)
	return l.Fake.SubscribeLinks(ctx, onErr)
}

// TestDeviceDeletedBeforeLinkSubscription: the device disappears after the
// datapath was ensured but before Run's link subscription exists (here:
// after the first reconcile, if Run started that before subscribing). The
// reconcile that follows the subscription recreates it, long before the
// one-hour resync.
func TestDeviceDeletedBeforeLinkSubscription(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) }) // registered first: runs after every other cleanup
	f := host.NewFake()
	eth0 := f.AddUnderlay("eth0", 1500, netip.MustParsePrefix("198.18.0.1/24"))
	reconciled := make(chan error, 100)
	w := &lateLinkSub{Fake: f}
	v, err := New(w, Config{
		Device:         DeviceConfig{LocalIP: netip.MustParseAddr("198.18.0.1"), UnderlayIndex: eth0},
		Network:        netip.MustParsePrefix("10.244.0.0/16"),
		ResyncInterval: time.Hour,
		Observer:       Observer{Reconciled: func(err error) { reconciled <- err }},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v.device.newMAC = func() (net.HardwareAddr, error) { return net.HardwareAddr{0x0e, 0, 0, 0, 0, 1}, nil }
	dev, err := v.EnsureDevice()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.SetAddress(netip.MustParsePrefix("10.244.1.0/24")); err != nil {
		t.Fatal(err)
	}
	if err := v.SetPeers([]Peer{peerB()}); err != nil {
		t.Fatal(err)
	}
	deleted := make(chan struct{})
	w.before = func() {
		// A reconcile that runs before the subscription (it would not,
		// subscribing first) is let finish, so the deletion falls after it.
		select {
		case <-reconciled:
		case <-time.After(500 * time.Millisecond):
		}
		f.RemoveLink("flannel.1")
		close(deleted)
	}
	defer startRun(t, v)()
	expect(t, deleted, "the link subscription")
	waitFor(t, "device recreated and reprogrammed", func() bool {
		l, err := f.LinkByName("flannel.1")
		return err == nil && l.Attrs().HardwareAddr.String() == dev.MAC.String() &&
			hasFakeRoute(t, f, "10.244.2.0/24", int(peerMetric(peerB().Subnet)))
	})
}
