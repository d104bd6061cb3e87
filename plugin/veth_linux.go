package plugin

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"syscall"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// attachment is one pod interface: its names, address and the netns it lives in.
type attachment struct {
	containerID string
	ifname      string
	hostName    string
	ip          netip.Addr
	podNS       ns.NetNS
	// ownVeth: a veth named hostName may exist and is ours to delete on
	// rollback (false when the name was taken before this ADD).
	ownVeth bool
	podH    *netlink.Handle // netlink in the pod netns, opened by add
}

// createVeth makes the pair in one netlink request: the node side named
// hostName, on the bridge, marked with our alias, and down (attach brings it
// up last); the pod side created directly in the pod netns as ifname, with
// the address-derived MAC. An ifname already in the pod netns fails the
// request with EEXIST, like a leftover node side does; the node side's name
// tells the two apart.
func createVeth(h *netlink.Handle, br *netlink.Bridge, a *attachment, mtu int) (*netlink.Veth, error) {
	la := netlink.NewLinkAttrs()
	la.Name = a.hostName
	la.MTU = mtu
	la.MasterIndex = br.Index
	la.Alias = vethAlias(a.containerID, a.ifname)
	la.HardwareAddr = hostVethMAC(a.containerID, a.ifname)
	v := &netlink.Veth{
		LinkAttrs:        la,
		PeerName:         a.ifname,
		PeerHardwareAddr: ipMAC(a.ip),
		PeerNamespace:    netlink.NsFd(int(a.podNS.Fd())),
		PeerMTU:          uint32(mtu),
		PeerTxQLen:       -1,
	}
	a.ownVeth = true
	if err := h.LinkAdd(v); err != nil {
		if errors.Is(err, syscall.EEXIST) {
			a.ownVeth = false
			if _, lerr := h.LinkByName(a.hostName); lerr == nil {
				// The name derives from (container ID, ifname): this
				// attachment was added before and never deleted.
				return nil, cniErr(CodeAlreadyAttached, "%s/%s is already attached (veth %s exists): DEL it before adding it again", a.containerID, a.ifname, a.hostName)
			}
			return nil, cniErr(CodeIfNameExists, "interface %q already exists in netns %s", a.ifname, a.podNS.Path())
		}
		return nil, internal(err, "create veth %s (pod side %s)", a.hostName, a.ifname)
	}
	return v, nil
}

// configurePod brings the pod side up with its address and routes (the pair
// has no carrier yet: attach brings the node side up afterwards). DAD is
// switched off first: the kernel would otherwise hold IPv6 addresses
// tentative for about a second (k8s#54651), and ADD never waits.
func configurePod(a *attachment, p plan, isDefaultGateway bool) (*netlink.Veth, error) {
	if err := enterPod(a); err != nil {
		return nil, err
	}
	podH := a.podH
	l, err := podH.LinkByName(a.ifname)
	if err != nil {
		return nil, internal(err, "find %s in pod netns", a.ifname)
	}
	veth, ok := l.(*netlink.Veth)
	if !ok {
		return nil, internal(fmt.Errorf("type %s", l.Type()), "pod interface %s is not a veth", a.ifname)
	}
	if err := podH.LinkSetUp(l); err != nil {
		return nil, internal(err, "set %s up", a.ifname)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.ip.AsSlice(), Mask: net.CIDRMask(p.rng.Subnet.Bits(), 32)}}
	if err := podH.AddrAdd(l, addr); err != nil {
		return nil, internal(err, "add %s to %s", addr.IPNet, a.ifname)
	}
	for _, r := range podRoutes(p, isDefaultGateway) {
		nr := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: &r.Dst, Gw: r.GW}
		if err := podH.RouteAdd(nr); err != nil {
			return nil, internal(err, "add route %s via %s in pod", r.Dst, r.GW)
		}
	}
	return veth, nil
}

// enterPod switches DAD off on the pod side, which only /proc/sys can do, so
// it is a trip into the pod netns (~100 µs: a goroutine locked to a thread,
// two setns). The first /proc/sys lookup in a netns grows with the number of
// netns on the node (~20 µs + 0.2 µs per netns on the bench machine).
func enterPod(a *attachment) error {
	err := a.podNS.Do(func(ns.NetNS) error {
		if err := disableDAD(a.ifname); err != nil {
			return fmt.Errorf("disable DAD on %s: %w", a.ifname, err)
		}
		return nil
	})
	if err != nil {
		return internal(err, "in netns %s", a.podNS.Path())
	}
	return nil
}

// disableDAD must run inside the pod netns: /proc/sys/net follows the
// netns of the opener. A kernel without IPv6 has no such file; that is fine.
func disableDAD(ifname string) error {
	err := os.WriteFile("/proc/sys/net/ipv6/conf/"+ifname+"/accept_dad", []byte("0"), 0o644)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
