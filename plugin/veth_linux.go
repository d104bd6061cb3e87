package plugin

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

// attachment is one pod interface: its names, address and the netns it lives in.
type attachment struct {
	containerID string
	ifname      string
	hostName    string
	ips         []netip.Addr // one per family of the plan, in its order
	pod         *host.NS     // the pod netns, opened by add
	// ownVeth: a veth named hostName may exist and is ours to delete on
	// rollback (false when the name was taken before this ADD).
	ownVeth bool
}

// createVeth makes the pair in one netlink request: the node side named
// hostName, on the bridge, and down (attach brings it up last); the pod side
// created directly in the pod netns as ifname, with the address-derived MAC.
// An ifname already in the pod netns fails the request with EEXIST, like a
// leftover node side does; the node side's name tells the two apart.
func createVeth(node *host.NS, br *netlink.Bridge, a *attachment, mtu int) error {
	a.ownVeth = true
	err := node.NewVeth(host.VethPair{
		Name:     a.hostName,
		MAC:      hostVethMAC(a.containerID, a.ifname),
		Master:   br.Index,
		MTU:      mtu,
		PeerName: a.ifname,
		PeerMAC:  ipMAC(a.ips[0]), // IPv4's when there is one

		PeerNS: a.pod,
	})
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.EEXIST) {
		a.ownVeth = false
		if _, lerr := node.LinkByName(a.hostName); lerr == nil {
			// The name derives from (container ID, ifname): this
			// attachment was added before and never deleted.
			return cniErr(CodeAlreadyAttached, "%s/%s is already attached (veth %s exists): DEL it before adding it again", a.containerID, a.ifname, a.hostName)
		}
		return cniErr(CodeIfNameExists, "interface %q already exists in netns %s", a.ifname, a.pod.Path())
	}
	return internal(err, "create veth %s (pod side %s)", a.hostName, a.ifname)
}

// configurePod brings the pod side up (without carrier until attach brings
// the node side up) with its addresses and routes. DAD is switched off
// first, and IPv6 addresses are added with IFA_F_NODAD too: the kernel would
// otherwise hold them tentative for about a second (k8s#54651), and ADD never
// waits.
func configurePod(a *attachment, p plan, isDefaultGateway bool) (*netlink.Veth, error) {
	if err := disableDAD(a.pod, a.ifname); err != nil {
		return nil, internal(err, "disable DAD on %s in netns %s", a.ifname, a.pod.Path())
	}
	l, err := a.pod.LinkByName(a.ifname)
	if err != nil {
		return nil, internal(err, "find %s in pod netns", a.ifname)
	}
	veth, ok := l.(*netlink.Veth)
	if !ok {
		return nil, internal(fmt.Errorf("type %s", l.Type()), "pod interface %s is not a veth", a.ifname)
	}
	if err := a.pod.LinkSetUp(l); err != nil {
		return nil, internal(err, "set %s up", a.ifname)
	}
	for i, f := range p.fams {
		addr := &netlink.Addr{IPNet: host.PrefixIPNet(netip.PrefixFrom(a.ips[i], f.rng.Subnet.Bits()))}
		if f.is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := a.pod.AddrAdd(l, addr); err != nil {
			return nil, internal(err, "add %s to %s", addr.IPNet, a.ifname)
		}
	}
	for _, r := range podRoutes(p, isDefaultGateway) {
		nr := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: &r.Dst, Gw: r.GW}
		if err := a.pod.RouteAdd(nr); err != nil {
			return nil, internal(err, "add route %s via %s in pod", r.Dst, r.GW)
		}
	}
	return veth, nil
}

// disableDAD writes the pod side's accept_dad in the pod netns (/proc/sys/net
// shows the netns of the thread that opens it). A kernel without IPv6 has no
// such file, and a read-only /proc/sys refuses the write; both are fine: the
// pod's IPv6 address carries IFA_F_NODAD anyway, accept_dad only spares its
// link-local address the wait.
func disableDAD(pod *host.NS, ifname string) error {
	err := pod.WriteSysctl("net/ipv6/conf/"+ifname+"/accept_dad", "0")
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.EROFS) {
		return nil
	}
	return err
}
