package plugin

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// rtnl is a route netlink socket for the few requests the netlink library
// can only make in several round trips. Every round trip is paid on every
// ADD, so the node-side port is made in two requests instead of five:
//
//   - newVeth: one RTM_NEWLINK creating the pair with the node side already
//     enslaved (IFLA_MASTER is honoured at creation) and the pod side created
//     in the pod netns. netlink.Handle.LinkAdd follows its create with
//     a lookup of the new index and a separate "set master".
//   - upPort: one RTM_NEWLINK, addressed by name, that sets the node side up,
//     its alias, and its bridge-port hairpin flag together (the bridge's
//     slave data, as `ip link set X up type bridge_slave hairpin on` sends
//     it), instead of an AF_BRIDGE setlink plus a setlink for the flags,
//     both by index. The alias has to be set here: the kernel ignores
//     IFLA_IFALIAS in a create request.
//
// The socket lives in the netns of the thread that opened it.
type rtnl struct {
	sh *nl.SocketHandle
}

func openRtnl() (*rtnl, error) {
	s, err := nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("route netlink socket: %w", err)
	}
	return &rtnl{sh: &nl.SocketHandle{Socket: s}}, nil
}

func (r *rtnl) Close() { r.sh.Close() }

func (r *rtnl) exec(req *nl.NetlinkRequest) error {
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: r.sh}
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// vethSpec is one pair: the node side (name, MAC, bridge) and the pod
// side, created in podNS, named and addressed. Both start down. (The pod side
// cannot be created up: a peer created in another netns with IFF_UP fails
// with ENOTCONN.)
type vethSpec struct {
	name    string
	mac     net.HardwareAddr
	master  int
	mtu     int
	peer    string
	peerMAC net.HardwareAddr
	podNS   int // fd of the pod netns
}

// newVeth creates the pair; an existing name on either side is EEXIST.
func (r *rtnl) newVeth(v vethSpec) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(v.name)))
	req.AddData(nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(v.mtu))))
	req.AddData(nl.NewRtAttr(unix.IFLA_ADDRESS, v.mac))
	req.AddData(nl.NewRtAttr(unix.IFLA_MASTER, nl.Uint32Attr(uint32(v.master))))
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(unix.IFLA_INFO_KIND, nl.NonZeroTerminated("veth"))
	peer := info.AddRtAttr(unix.IFLA_INFO_DATA, nil).AddRtAttr(nl.VETH_INFO_PEER, nil)
	nl.NewIfInfomsgChild(peer, unix.AF_UNSPEC)
	peer.AddRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(v.peer))
	peer.AddRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(v.mtu)))
	peer.AddRtAttr(unix.IFLA_ADDRESS, v.peerMAC)
	peer.AddRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(v.podNS)))
	req.AddData(info)
	return r.exec(req)
}

// upPort sets the bridge port name up with alias (unless empty), and its
// hairpin flag when hairpin.
func (r *rtnl) upPort(name, alias string, hairpin bool) error {
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
	return r.exec(req)
}

// delLink deletes the link called name in one request (no lookup first).
// A missing link is ENODEV.
func (r *rtnl) delLink(name string) error {
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	return r.exec(req)
}
