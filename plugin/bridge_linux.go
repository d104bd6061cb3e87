package plugin

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

// ensureBridge makes sure the bridge exists, is a bridge, is up, has the
// plan's MTU and carries each family's gateway address, and returns it.
// Several ADDs may run this at once; every step tolerates the others having
// done it first.
func ensureBridge(h *host.NS, name string, p plan, log *slog.Logger) (*netlink.Bridge, error) {
	mtu := p.mtu
	created := false // a bridge made here with addrgen mode none
	br, err := bridgeByName(h, name)
	if err != nil && !isLinkNotFound(err) {
		return nil, err
	}
	if br == nil {
		la := netlink.NewLinkAttrs()
		la.Name = name
		la.MTU = mtu
		// A fixed MAC keeps the bridge's address from following its lowest
		// port's MAC as pods come and go (pods would hold a stale ARP entry
		// for the gateway).
		la.HardwareAddr = ipMAC(p.fams[0].gateway.Addr())
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil && !errors.Is(err, syscall.EEXIST) {
			return nil, internal(err, "create bridge %s", name)
		}
		if br, err = bridgeByName(h, name); err != nil {
			return nil, err
		}
		log.Info("created bridge", "bridge", name, "mtu", mtu)
		// Before the link goes up: see setLinkLocal.
		if err := h.LinkSetIP6AddrGenMode(br, nl.IN6_ADDR_GEN_MODE_NONE); err != nil {
			log.Debug("cannot set the bridge's IPv6 addrgen mode (no IPv6?)", "bridge", name, "err", err)
		} else {
			created = true
		}
	}
	if br.Attrs().MTU != mtu {
		if err := h.LinkSetMTU(br, mtu); err != nil {
			return nil, internal(err, "set MTU %d on bridge %s", mtu, name)
		}
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(br); err != nil {
			return nil, internal(err, "set bridge %s up", name)
		}
	}
	if created {
		setLinkLocal(h, br, log)
	}
	for _, f := range p.fams {
		if err := ensureBridgeAddr(h, br, f, log); err != nil {
			return nil, err
		}
	}
	return br, nil
}

// bridgeByName returns the link, or an error when it is not a bridge. A
// missing link is returned as netlink.LinkNotFoundError.
func bridgeByName(h *host.NS, name string) (*netlink.Bridge, error) {
	l, err := h.LinkByName(name)
	if err != nil {
		if isLinkNotFound(err) {
			return nil, err
		}
		return nil, internal(err, "look up bridge %s", name)
	}
	br, ok := l.(*netlink.Bridge)
	if !ok {
		return nil, cniErr(types.ErrInvalidNetworkConfig, "%s already exists but is a %s, not a bridge: remove it or set \"bridge\" to another name", name, l.Type())
	}
	return br, nil
}

// ensureBridgeAddr gives the bridge the family's gateway address (an IPv6
// one with IFA_F_NODAD: usable at once). Any other address of the family
// (IPv6 link-local ones aside) is a leftover of an earlier subnet (weftd got
// a new lease): it is replaced when no port is attached, and refused
// otherwise, because the pods on the bridge still use the old gateway.
func ensureBridgeAddr(h *host.NS, br *netlink.Bridge, f family, log *slog.Logger) error {
	gw := f.gateway
	nlFamily := netlink.FAMILY_V4
	if f.is6() {
		nlFamily = netlink.FAMILY_V6
	}
	addrs, err := h.AddrList(br, nlFamily)
	if err != nil {
		return internal(err, "list %s addresses of bridge %s", f.name(), br.Name)
	}
	want := host.PrefixIPNet(gw)
	have := false
	var stale []netlink.Addr
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		if a.IPNet.String() == want.String() {
			have = true
		} else {
			stale = append(stale, a)
		}
	}
	if len(stale) > 0 {
		ports, err := bridgePorts(h, br)
		if err != nil {
			return err
		}
		if len(ports) > 0 {
			return cniErr(types.ErrInvalidNetworkConfig,
				"bridge %s has address %s but the node's subnet needs %s, and %d ports (%s...) are still attached, so weft will not change it: the node's subnet changed; delete the pods of the old subnet (or the bridge) and retry",
				br.Name, stale[0].IPNet, gw, len(ports), ports[0])
		}
		for _, a := range stale {
			if err := h.AddrDel(br, &a); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
				return internal(err, "remove stale address %s from bridge %s", a.IPNet, br.Name)
			}
			log.Warn("removed stale bridge address (no ports attached)", "bridge", br.Name, "old", a.IPNet.String(), "new", gw.String())
		}
	}
	if !have {
		addr := &netlink.Addr{IPNet: want}
		if f.is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(br, addr); err != nil && !errors.Is(err, syscall.EEXIST) {
			return internal(err, "add %s to bridge %s", gw, br.Name)
		}
	}
	return nil
}

// bridgePorts names the links attached to br.
func bridgePorts(h *host.NS, br *netlink.Bridge) ([]string, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, internal(err, "ports of bridge %s", br.Name)
	}
	var names []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Index {
			names = append(names, l.Attrs().Name)
		}
	}
	return names, nil
}

// enableForwarding turns on a family's forwarding in the plugin's (the
// node's) netns: the bridge is the pods' gateway. A sysctl already at 1 is
// left alone, so a read-only /proc/sys does no harm then. For IPv6 that is
// net.ipv6.conf.all.forwarding, which also makes the node a router in
// IPv6's sense: interfaces stop taking router advertisements unless their
// accept_ra is 2.
func enableForwarding(node *host.NS, v6 bool) error {
	key, name := "net/ipv4/ip_forward", "IPv4"
	if v6 {
		key, name = "net/ipv6/conf/all/forwarding", "IPv6"
	}
	if v, err := node.ReadSysctl(key); err == nil && strings.HasPrefix(v, "1") {
		return nil
	}
	if err := node.WriteSysctl(key, "1"); err != nil {
		return internal(err, "enable %s forwarding (%s=1 in the node's netns; set it on the node if /proc/sys is read-only here)", name, strings.ReplaceAll(key, "/", "."))
	}
	return nil
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// ignoreNotFound drops errors that mean "already gone".
func ignoreNotFound(err error) error {
	if err == nil || isLinkNotFound(err) || errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return err
}

// setLinkLocal gives a bridge created with addrgen mode none its link-local
// address: the one the kernel would derive from its (fixed) MAC, but with
// IFA_F_NODAD. The kernel's own would first go through duplicate address
// detection (a second or more), and while it is tentative the node sends no
// neighbour solicitation for packets it forwards to a pod: the first IPv6
// packets from other nodes to a new node's pods would wait. accept_dad=0
// would do too, but needs a writable /proc/sys; netlink does not. Best
// effort: a kernel without IPv6 refuses it, and IPv4 does not need it.
func setLinkLocal(h *host.NS, br *netlink.Bridge, log *slog.Logger) {
	ll := &netlink.Addr{IPNet: host.PrefixIPNet(linkLocal(br.Attrs().HardwareAddr)), Flags: unix.IFA_F_NODAD}
	if err := h.AddrAdd(br, ll); err != nil && !errors.Is(err, syscall.EEXIST) {
		log.Debug("cannot add the bridge's link-local address", "bridge", br.Name, "addr", ll.IPNet.String(), "err", err)
	}
}

// linkLocal is fe80::/64 with the modified EUI-64 interface identifier of
// mac (RFC 4291 appendix A), as the kernel derives it.
func linkLocal(mac net.HardwareAddr) netip.Prefix {
	var b [16]byte
	b[0], b[1] = 0xfe, 0x80
	if len(mac) == 6 {
		b[8], b[9], b[10] = mac[0]^0x02, mac[1], mac[2]
		b[11], b[12] = 0xff, 0xfe
		b[13], b[14], b[15] = mac[3], mac[4], mac[5]
	}
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}
