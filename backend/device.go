package backend

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// appSolicit is how many times the kernel asks userspace (RTM_GETNEIGH, an L3
// miss) before it falls back to broadcast ARP (multicast neighbour
// solicitation for IPv6), which on a VXLAN device without a flood entry goes
// nowhere. The first ask is immediate; retries follow every retrans_time
// (1 s).
const appSolicit = 3

// ensureDeviceLocked returns the device and whether it was (re)created, in
// which case the kernel dropped every neighbour, FDB entry and route on it.
func (v *link) ensureDeviceLocked() (*Device, bool, error) {
	name := v.cfg.deviceName()
	mtu, err := v.deviceMTU()
	if err != nil {
		return nil, false, fmt.Errorf("ensure vxlan %q: %w", name, err)
	}
	cur, err := v.nl.LinkByName(name)
	if err != nil && !isLinkNotFound(err) {
		return nil, false, fmt.Errorf("ensure vxlan %q: %w", name, err)
	}
	var keepMAC net.HardwareAddr
	if cur != nil {
		reason := v.incompatible(cur)
		if reason == "" {
			mac := cur.Attrs().HardwareAddr // a restart: reuse what peers know
			if v.dev != nil {
				mac = v.dev.MAC // already published: put it back if changed
			}
			d, err := v.finishDevice(cur, mtu, mac)
			return d, false, err
		}
		v.log.Warn("recreating incompatible vxlan device", "reason", reason)
		if vx, ok := cur.(*netlink.Vxlan); ok {
			keepMAC = vx.HardwareAddr // peers already know it
		}
		if err := v.nl.LinkDel(cur); err != nil && !isLinkNotFound(err) {
			return nil, false, fmt.Errorf("ensure vxlan %q: delete incompatible device (%s): %w", name, reason, err)
		}
	}
	if keepMAC == nil {
		if v.dev != nil {
			keepMAC = v.dev.MAC // recreating after a deletion: keep what peers know
		} else if keepMAC, err = v.newMAC(); err != nil {
			return nil, false, fmt.Errorf("ensure vxlan %q: %w", name, err)
		}
	}
	link, err := v.createDevice(name, mtu, keepMAC)
	if err != nil {
		return nil, false, err
	}
	d, err := v.finishDevice(link, mtu, keepMAC)
	return d, true, err
}

// createDevice adds the link with the MAC set in the same request, so udev or
// systemd's MACAddressPolicy has no window to publish another one.
func (v *link) createDevice(name string, mtu int, mac net.HardwareAddr) (netlink.Link, error) {
	dc := v.cfg.Device
	want := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: name, MTU: mtu, HardwareAddr: mac},
		VxlanId:      dc.VNI,
		VtepDevIndex: dc.UnderlayIndex,
		SrcAddr:      dc.LocalIP.AsSlice(),
		Port:         dc.Port,
		Learning:     dc.Learning,
		GBP:          dc.GBP,
		// L2miss makes the driver report an unknown destination MAC
		// (RTM_GETNEIGH, AF_BRIDGE). It cannot be changed after creation.
		// L3miss is not set: it only fires for ARP the driver proxies
		// (the proxy flag), which we do not use; L3 misses come from the
		// neighbour table's app_solicit instead.
		L2miss: true,
	}
	err := v.nl.LinkAdd(want)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("create vxlan %q: %w", name, err)
	}
	link, err := v.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("create vxlan %q: read back: %w", name, err)
	}
	if reason := v.incompatible(link); reason != "" {
		return nil, fmt.Errorf("create vxlan %q: created device is incompatible: %s", name, reason)
	}
	v.log.Info("created vxlan device", "vni", dc.VNI, "port", dc.Port, "local", dc.LocalIP,
		"underlay_index", dc.UnderlayIndex, "mtu", mtu, "mac", mac.String())
	return link, nil
}

// finishDevice brings an existing compatible device to the wanted MTU, IPv6
// and neighbour settings, sets it up and verifies its MAC.
func (v *link) finishDevice(link netlink.Link, mtu int, mac net.HardwareAddr) (*Device, error) {
	a := link.Attrs()
	if a.MTU != mtu {
		v.log.Info("setting device MTU", "old", a.MTU, "new", mtu)
		if err := v.nl.LinkSetMTU(link, mtu); err != nil {
			return nil, fmt.Errorf("ensure vxlan %q: set mtu %d: %w", a.Name, mtu, err)
		}
	}
	if err := v.deviceSysctls(link); err != nil {
		return nil, fmt.Errorf("ensure vxlan %q: %w", a.Name, err)
	}
	if a.Flags&net.FlagUp == 0 {
		if err := v.nl.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("ensure vxlan %q: set up: %w", a.Name, err)
		}
	}
	got, err := v.verifyMAC(link, mac)
	if err != nil {
		return nil, fmt.Errorf("ensure vxlan %q: %w", a.Name, err)
	}
	d := &Device{Name: a.Name, Index: got.Attrs().Index, MAC: mac, MTU: got.Attrs().MTU}
	if v.dev == nil || v.dev.Index != d.Index {
		v.log.Info("vxlan device ready", "index", d.Index, "mac", d.MAC.String(), "mtu", d.MTU)
	}
	v.dev = d
	v.devIndex.Store(int64(d.Index))
	v.devSnap.Store(d)
	return d, nil
}

// verifyMAC re-reads the link after it is up and puts the MAC back if the
// kernel, udev or anyone else changed it (flannel#1155, #1795).
func (v *link) verifyMAC(link netlink.Link, mac net.HardwareAddr) (netlink.Link, error) {
	got, err := v.nl.LinkByIndex(link.Attrs().Index)
	if err != nil {
		return nil, fmt.Errorf("read back: %w", err)
	}
	if bytes.Equal(got.Attrs().HardwareAddr, mac) {
		return got, nil
	}
	v.log.Warn("device MAC changed behind our back; restoring", "found", got.Attrs().HardwareAddr.String(), "want", mac.String())
	if err := v.nl.LinkSetHardwareAddr(got, mac); err != nil {
		return nil, fmt.Errorf("restore mac %s: %w", mac, err)
	}
	if got, err = v.nl.LinkByIndex(link.Attrs().Index); err != nil {
		return nil, fmt.Errorf("read back: %w", err)
	}
	if !bytes.Equal(got.Attrs().HardwareAddr, mac) {
		return nil, fmt.Errorf("mac is %s after setting %s", got.Attrs().HardwareAddr, mac)
	}
	return got, nil
}

// incompatible explains why an existing link cannot be reused ("" = it can).
func (v *link) incompatible(link netlink.Link) string {
	vx, ok := link.(*netlink.Vxlan)
	if !ok {
		return fmt.Sprintf("type %q, want vxlan", link.Type())
	}
	dc := v.cfg.Device
	local := dc.LocalIP.AsSlice()
	switch {
	case vx.VxlanId != dc.VNI:
		return fmt.Sprintf("vni %d, want %d", vx.VxlanId, dc.VNI)
	case !net.IP(local).Equal(vx.SrcAddr):
		return fmt.Sprintf("local %v, want %s", vx.SrcAddr, dc.LocalIP)
	case vx.VtepDevIndex != dc.UnderlayIndex:
		return fmt.Sprintf("underlay index %d, want %d", vx.VtepDevIndex, dc.UnderlayIndex)
	case vx.Port != dc.Port:
		return fmt.Sprintf("port %d, want %d", vx.Port, dc.Port)
	case vx.GBP != dc.GBP:
		return fmt.Sprintf("gbp %t, want %t", vx.GBP, dc.GBP)
	case vx.Learning != dc.Learning:
		return fmt.Sprintf("learning %t, want %t", vx.Learning, dc.Learning)
	case !vx.L2miss:
		return "l2miss off (it cannot be changed in place)"
	case vx.FlowBased:
		return "external (flow-based) device"
	}
	return ""
}

// deviceMTU is the (overridden) underlay MTU minus the VXLAN overhead.
func (v *link) deviceMTU() (int, error) {
	dc := v.cfg.Device
	base := dc.MTU
	if base == 0 {
		base = dc.UnderlayMTU
	}
	if base == 0 {
		u, err := v.nl.LinkByIndex(dc.UnderlayIndex)
		if err != nil {
			return 0, fmt.Errorf("read underlay MTU (index %d): %w", dc.UnderlayIndex, err)
		}
		base = u.Attrs().MTU
	}
	overhead, least, fam := vxlanOverheadV4, 68, "IPv4"
	if dc.LocalIP.Is6() {
		// Below 1280 the kernel turns IPv6 off on the device.
		overhead, least, fam = vxlanOverheadV6, 1280, "IPv6"
	}
	if base-overhead < least {
		return 0, fmt.Errorf("underlay MTU %d leaves %d for the overlay, below %s's %d", base, base-overhead, fam, least)
	}
	return base - overhead, nil
}

// deviceSysctls turns off IPv6 autoconfiguration on the device (no link-local
// address, no router advertisements; the IPv6 device's only address is the
// one SetAddress puts) and makes the neighbour table of the datapath's
// family (ARP's or NDP's) ask userspace on a miss.
func (v *link) deviceSysctls(link netlink.Link) error {
	name := link.Attrs().Name
	// IN6_ADDR_GEN_MODE_NONE: no link-local address. Fails harmlessly when
	// the kernel has IPv6 disabled.
	if err := v.nl.LinkSetIP6AddrGenMode(link, nl.IN6_ADDR_GEN_MODE_NONE); err != nil {
		v.log.Debug("cannot set IPv6 addrgen mode", "err", err)
	}
	if err := v.refuseRouterAdverts(name); err != nil {
		return err
	}
	return v.nl.SetAppSolicit(v.cfg.family(), link.Attrs().Index, appSolicit)
}

// refuseRouterAdverts sets accept_ra=0 on the device.
//
// It matters even with addrgen mode none. Without a link-local address the
// device still joins ff02::1 and the kernel still acts on a router
// advertisement from any link-local source, and a VXLAN device takes every
// packet with its VNI on its UDP port, whoever sends it. So one UDP datagram
// to <node>:8472 carrying an RA, from anything that reaches that port (a
// node, a pod), gives the device a SLAAC address and the node a default IPv6
// route through flannel.1 when accept_ra is 2, or 1 (the default) with IPv6
// forwarding off; seen on Linux 6.18 (masq's TestRADropTraffic does it).
//
// netlink cannot set it: under IFLA_AF_SPEC/AF_INET6, RTM_SETLINK takes only
// IFLA_INET6_TOKEN and IFLA_INET6_ADDR_GEN_MODE (IFLA_INET6_CONF is refused
// with EINVAL), and there is no RTM_SETNETCONF. So it is written to
// /proc/sys, which is read-only in a container that is not privileged (the
// DaemonSet's). There the agent guards the device with nftables instead:
// masq.EnsureRADrop drops RAs (and redirects) arriving on it in the input
// hook, before neighbour discovery sees them, and Config.RAGuarded says so;
// then the failed write is logged at Debug only. Unguarded, the device's
// settings are read (reads still work): only if the kernel would act on an
// RA is that worth a warning, once per datapath (a reconcile re-applies the
// settings every ResyncInterval); all else is logged at Debug.
func (v *link) refuseRouterAdverts(name string) error {
	dir := "net/ipv6/conf/" + name + "/"
	err := v.nl.WriteSysctl(dir+"accept_ra", "0")
	switch {
	case err == nil, errors.Is(err, os.ErrNotExist): // no IPv6 in this kernel
		return nil
	case !errors.Is(err, unix.EROFS) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EPERM):
		return err
	}
	accepted, rerr := v.routerAdvertsAccepted(dir)
	if !accepted || v.raWarned || v.cfg.RAGuarded {
		v.log.Debug("cannot set accept_ra on the device", "err", err,
			"router_adverts_accepted", accepted, "guarded_by_nftables", v.cfg.RAGuarded)
		return nil
	}
	v.raWarned = true
	v.log.Warn("cannot stop IPv6 router advertisements on the device: /proc/sys is read-only",
		"risk", "anything that reaches the VXLAN port can give this node an IPv6 address and default route through the device",
		"fix", "net.ipv6.conf."+strings.ReplaceAll(name, ".", "/")+".accept_ra=0 in the node's sysctl.d (systemd applies it when the device appears)",
		"err", errors.Join(err, rerr))
	return nil
}

// routerAdvertsAccepted reads the device's IPv6 settings under dir and
// reports whether the kernel acts on a router advertisement it receives. A
// setting that cannot be read counts as accepting (with the error).
func (v *link) routerAdvertsAccepted(dir string) (bool, error) {
	var vals [3]int
	for i, key := range []string{"disable_ipv6", "accept_ra", "forwarding"} {
		s, err := v.nl.ReadSysctl(dir + key)
		if err == nil {
			vals[i], err = strconv.Atoi(strings.TrimSpace(s))
		}
		if err != nil {
			return true, fmt.Errorf("read sysctl %s%s: %w", dir, key, err)
		}
	}
	return raAccepted(vals[0], vals[1], vals[2]), nil
}

// raAccepted is the kernel's rule (ipv6_accept_ra in include/net/ipv6.h):
// with forwarding on only accept_ra 2 accepts, else any accept_ra but 0;
// disable_ipv6 drops all IPv6 input first.
func raAccepted(disableIPv6, acceptRA, forwarding int) bool {
	switch {
	case disableIPv6 != 0:
		return false
	case forwarding != 0:
		return acceptRA == 2
	}
	return acceptRA != 0
}

// randomMAC returns a random locally administered unicast MAC.
func randomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("random mac: %w", err)
	}
	mac[0] = (mac[0] | 0x02) &^ 0x01 // locally administered, unicast
	return mac, nil
}
