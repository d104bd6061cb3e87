package plugin

import (
	"errors"
	"log/slog"
	"net"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

// ensureBridge makes sure the bridge exists, is a bridge, is up, has the
// plan's MTU and carries each family's gateway address, and returns it.
// Several ADDs may run this at once; every step tolerates the others having
// done it first.
func ensureBridge(h *host.NS, name string, p plan, log *slog.Logger) (*netlink.Bridge, error) {
	mtu := p.mtu
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
		// Before the link goes up: a link-local address still in duplicate
		// address detection is no source for neighbour solicitations, and
		// the kernel sends none for packets it forwards to a pod until DAD
		// is over (the first cross-node IPv6 packets to a new node's pods
		// wait a second or more). The bridge's addresses are ours alone.
		if err := disableDAD(h, name); err != nil {
			log.Debug("cannot turn off DAD on the bridge", "bridge", name, "err", err)
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
