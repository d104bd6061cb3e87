package backend

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

// kernel is the seam and the namespace it points into: what the device,
// the subscriptions and the sysctls need (device.go, miss_linux.go,
// neightbl_linux.go).
type kernel struct {
	nl  host.Host
	cfg Config
	log *slog.Logger
}

// link keeps the VXLAN device (device.go): it creates, repairs and
// describes it. Its fields other than the atomics are used under VXLAN.mu.
type link struct {
	*kernel
	dev      *Device // as last ensured; nil before EnsureDevice
	devIndex atomic.Int64
	devSnap  atomic.Pointer[Device] // dev, for readers without VXLAN.mu
	newMAC   func() (net.HardwareAddr, error)
	raWarned bool // the warning that the device accepts router advertisements was given
}

// setAddress puts <lease .0>/32 on the device and removes any other IPv4
// address from it; for IPv6, <lease ::0>/128 with IFA_F_NODAD (duplicate
// address detection would keep it tentative, unusable as a source, for a
// second or more, and nothing else can own it) and every other IPv6 address
// but the link-local ones is removed.
func (v *link) setAddress(lease netip.Prefix) error {
	link := v.linkRef()
	want := netip.PrefixFrom(lease.Addr(), lease.Addr().BitLen())
	addr := &netlink.Addr{IPNet: host.PrefixIPNet(want)}
	if v.cfg.is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := v.nl.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("set address %s on %s: %w", want, v.dev.Name, err)
	}
	addrs, err := v.nl.AddrList(link, v.cfg.family())
	if err != nil {
		return fmt.Errorf("set address %s on %s: %w", want, v.dev.Name, err)
	}
	var errs []error
	for _, a := range addrs {
		p, ok := host.IPNetPrefix(a.IPNet)
		if !ok || p == want || p.Addr().Is6() != want.Addr().Is6() || p.Addr().IsLinkLocalUnicast() && p.Addr().Is6() {
			continue
		}
		v.log.Info("removing stale address", "addr", p)
		if err := v.nl.AddrDel(link, &a); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("remove stale address %s from %s: %w", p, v.dev.Name, err))
		}
	}
	return errors.Join(errs...)
}

// linkRef is a minimal Link naming the device by index, for calls that only
// read Attrs().Index (and Name for messages).
func (v *link) linkRef() netlink.Link {
	return &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: v.cfg.deviceName(), Index: int(v.devIndex.Load())}}
}

// needsRepair decides whether a link event concerns the device in a way a
// reconcile must repair: it disappeared, was replaced, went down or changed
// its MAC (flannel#2247: the device vanished with a NIC flap and was never
// recreated).
func (v *link) needsRepair(u netlink.LinkUpdate) bool {
	a := u.Attrs()
	cur := int(v.devIndex.Load())
	if a.Index != cur && a.Name != v.cfg.deviceName() {
		return false
	}
	if u.Header.Type == rtmDelLink {
		return a.Index == cur
	}
	want := v.devSnap.Load()
	return want == nil || a.Index != cur || a.Flags&net.FlagUp == 0 || !macEqual(a.HardwareAddr, want.MAC)
}

func macEqual(a, b net.HardwareAddr) bool { return a.String() == b.String() }
