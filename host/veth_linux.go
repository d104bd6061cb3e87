package host

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// What the CNI plugin needs beyond Host: adding (rather than replacing)
// addresses and routes, a port's bridge flags, and three requests built by
// hand because the netlink library would make each in several round trips,
// paid on every pod ADD or DEL:
//
//   - NewVeth: one RTM_NEWLINK creating the pair with the first side already
//     enslaved (IFLA_MASTER is honoured at creation) and the peer created
//     directly in another namespace. netlink.Handle.LinkAdd follows its
//     create with a lookup of the new index and a separate "set master".
//   - SetPortUp: one RTM_NEWLINK, addressed by name, that sets a bridge port
//     up, its alias, and its hairpin flag together (the bridge's slave data,
//     as `ip link set X up type bridge_slave hairpin on` sends it), instead
//     of an AF_BRIDGE setlink plus a setlink for the flags, both by index.
//     The alias has to be set here: the kernel ignores IFLA_IFALIAS in a
//     create request.
//   - DelLinkByName: one RTM_DELLINK addressed by name, with no lookup first.
//
// The hand-built requests go through a second route netlink socket of the
// namespace, opened at the first of them (netlink.Handle does not lend its
// own), so a namespace that never makes one opens no socket for them.

// AddrAdd adds addr to link; an address already there is EEXIST (unlike
// AddrReplace, so concurrent writers can tell who added it).
func (n *NS) AddrAdd(link netlink.Link, addr *netlink.Addr) error { return n.h.AddrAdd(link, addr) }

// RouteAdd adds route; a route already there is EEXIST.
func (n *NS) RouteAdd(route *netlink.Route) error { return n.h.RouteAdd(route) }

// LinkGetProtinfo returns the bridge port flags (hairpin and the others) of
// link. It is a dump of the bridge ports, retried while interrupted.
func (n *NS) LinkGetProtinfo(link netlink.Link) (netlink.Protinfo, error) {
	pi, err := listRetry("bridge ports", func() ([]netlink.Protinfo, error) {
		pi, err := n.h.LinkGetProtinfo(link)
		return []netlink.Protinfo{pi}, err
	})
	if err != nil {
		return netlink.Protinfo{}, err
	}
	return pi[0], nil
}

// VethPair describes a veth pair for NewVeth: the side made in the
// namespace NewVeth is called on (Name, MAC, bridge Master, both sides' MTU)
// and its peer, made in PeerNS. Both sides start down: a peer created in
// another namespace with IFF_UP fails with ENOTCONN.
type VethPair struct {
	Name   string
	MAC    net.HardwareAddr // nil = random
	Master int              // ifindex of the bridge; 0 = none
	MTU    int              // 0 = kernel default

	PeerName string
	PeerMAC  net.HardwareAddr // nil = random
	// PeerNS is the peer's namespace: nil is the namespace of n. It must
	// be a namespace opened by path unless n is the caller's own.
	PeerNS *NS
}

// NewVeth creates the pair v in one request. An existing name on either side
// fails it with EEXIST, changing nothing.
func (n *NS) NewVeth(v VethPair) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(v.Name)))
	if v.MTU > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(v.MTU))))
	}
	if v.MAC != nil {
		req.AddData(nl.NewRtAttr(unix.IFLA_ADDRESS, v.MAC))
	}
	if v.Master > 0 {
		req.AddData(nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(uint32(v.Master))))
	}
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(unix.IFLA_INFO_KIND, nl.NonZeroTerminated("veth"))
	peer := info.AddRtAttr(unix.IFLA_INFO_DATA, nil).AddRtAttr(nl.VETH_INFO_PEER, nil)
	nl.NewIfInfomsgChild(peer, unix.AF_UNSPEC)
	peer.AddRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(v.PeerName))
	if v.MTU > 0 {
		peer.AddRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(v.MTU)))
	}
	if v.PeerMAC != nil {
		peer.AddRtAttr(unix.IFLA_ADDRESS, v.PeerMAC)
	}
	if v.PeerNS != nil && v.PeerNS != n {
		if v.PeerNS.fd < 0 {
			if n.fd >= 0 {
				return fmt.Errorf("create veth %s: peer namespace must be opened by path", v.Name)
			}
		} else {
			peer.AddRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(v.PeerNS.fd)))
		}
	}
	req.AddData(info)
	return n.exec(req)
}

// SetPortUp sets the link called name up, with alias (unless empty), and,
// when hairpin, its bridge port's hairpin flag.
func (n *NS) SetPortUp(name, alias string, hairpin bool) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	m := nl.NewIfInfomsg(unix.AF_UNSPEC)
	m.Flags, m.Change = unix.IFF_UP, unix.IFF_UP
	req.AddData(m)
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	if alias != "" {
		req.AddData(nl.NewRtAttr(unix.IFLA_IFALIAS, []byte(alias)))
	}
	if hairpin {
		info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
		info.AddRtAttr(unix.IFLA_INFO_SLAVE_KIND, nl.NonZeroTerminated("bridge"))
		info.AddRtAttr(unix.IFLA_INFO_SLAVE_DATA, nil).AddRtAttr(unix.IFLA_BRPORT_MODE, []byte{1})
		req.AddData(info)
	}
	return n.exec(req)
}

// DelLinkByName deletes the link called name. A missing link is ENODEV.
func (n *NS) DelLinkByName(name string) error {
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	return n.exec(req)
}

// exec sends req on the namespace's socket for hand-built requests, opening
// it first if needed. Requests on it are serialised: their answers would
// otherwise interleave.
func (n *NS) exec(req *nl.NetlinkRequest) error {
	n.rtMu.Lock()
	defer n.rtMu.Unlock()
	if n.h == nil {
		return errors.New("netns closed")
	}
	if n.rt == nil {
		var s *nl.NetlinkSocket
		err := n.Do(func() (err error) {
			s, err = nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_ROUTE)
			return err
		})
		if err != nil {
			return fmt.Errorf("route netlink socket in netns %q: %w", n.path, err)
		}
		n.rt = &nl.SocketHandle{Socket: s}
	}
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: n.rt}
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}
