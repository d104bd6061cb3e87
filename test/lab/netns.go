package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetNS is a named network namespace (visible to `ip netns`) owned by a lab.
type NetNS struct {
	Name string // e.g. wl1a2b-node1
	Path string // /run/netns/<Name>
	ns.NetNS
}

// NewNetNS runs `ip netns add name`, opens it and sets lo up.
func NewNetNS(ctx context.Context, name string) (*NetNS, error) {
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	path := filepath.Join("/run/netns", name)
	h, err := ns.GetNS(path)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open netns %s: %w", path, err), delNetNS(name))
	}
	n := &NetNS{Name: name, Path: path, NetNS: h}
	if err := n.LinkUp("lo"); err != nil {
		return nil, errors.Join(err, n.Remove())
	}
	return n, nil
}

// Remove closes the handle and deletes the namespace.
func (n *NetNS) Remove() error {
	_ = n.Close()
	return delNetNS(n.Name)
}

func delNetNS(name string) error {
	out, err := exec.Command("ip", "netns", "del", name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip netns del %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Handle returns a netlink handle bound to n; the caller closes it.
func (n *NetNS) Handle() (*netlink.Handle, error) {
	h, err := netlink.NewHandleAt(netns.NsHandle(n.Fd()))
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", n.Name, err)
	}
	return h, nil
}

// LinkUp sets the named link up inside n.
func (n *NetNS) LinkUp(name string) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err == nil {
		err = h.LinkSetUp(l)
	}
	if err != nil {
		return fmt.Errorf("set %s up in %s: %w", name, n.Name, err)
	}
	return nil
}

// DialContext opens a connection from inside n (the socket stays in n).
func (n *NetNS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func(ns.NetNS) error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s from %s: %w", network, addr, n.Name, err)
	}
	return c, nil
}

// Listen opens a listening socket inside n.
func (n *NetNS) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, addr, n.Name, err)
	}
	return ln, nil
}

// ListenPacket opens a packet socket (udp, ip4:icmp) inside n.
func (n *NetNS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := n.Do(func(ns.NetNS) error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, addr, n.Name, err)
	}
	return pc, nil
}

// Exec runs a command inside n (ip netns exec) and returns its combined output.
func (n *NetNS) Exec(ctx context.Context, name string, args ...string) (string, error) {
	argv := append([]string{"netns", "exec", n.Name, name}, args...)
	out, err := exec.CommandContext(ctx, "ip", argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %w: %s", strings.Join(append([]string{name}, args...), " "), n.Name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Sysctl sets a sysctl inside n (the net.* tree is per namespace).
func (n *NetNS) Sysctl(ctx context.Context, key, value string) error {
	_, err := n.Exec(ctx, "sysctl", "-q", "-w", key+"="+value)
	return err
}

// AddBridge creates an up bridge in n.
func (n *NetNS) AddBridge(name string) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge %s in %s: %w", name, n.Name, err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("set bridge %s up in %s: %w", name, n.Name, err)
	}
	return nil
}

// Plug connects host to the switch: a veth with port on the switch's bridge
// and "eth0" with addr inside host, plus a default route via gw when valid.
func Plug(sw *NetNS, bridge, port string, host *NetNS, addr netip.Prefix, gw netip.Addr) error {
	if err := PlugAddrs(sw, bridge, port, host, addr); err != nil || !gw.IsValid() {
		return err
	}
	return host.defaultRoute("eth0", gw)
}

// PlugAddrs connects host to the switch like Plug, with every address of
// addrs on eth0 (IPv6 ones without duplicate address detection) and no
// default route. Without addrs eth0 is only set up.
func PlugAddrs(sw *NetNS, bridge, port string, host *NetNS, addrs ...netip.Prefix) error {
	h, err := sw.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: port},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(host.Fd())),
	}
	if err := h.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s/%s:eth0: %w", port, host.Name, err)
	}
	pl, err := h.LinkByName(port)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", port, sw.Name, err)
	}
	br, err := h.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", bridge, sw.Name, err)
	}
	if err := h.LinkSetMaster(pl, br); err != nil {
		return fmt.Errorf("attach %s to %s: %w", port, bridge, err)
	}
	if err := h.LinkSetUp(pl); err != nil {
		return fmt.Errorf("set %s up: %w", port, err)
	}
	return host.addrUp("eth0", addrs...)
}

// defaultRoute adds a default route via gw on link in n.
func (n *NetNS) defaultRoute(link string, gw netip.Addr) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(link)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", link, n.Name, err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
		return fmt.Errorf("default route via %s in %s: %w", gw, n.Name, err)
	}
	return nil
}

// addrUp adds addrs to the named link in n (IPv6 ones with nodad) and sets
// it up.
func (n *NetNS) addrUp(link string, addrs ...netip.Prefix) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(link)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", link, n.Name, err)
	}
	for _, addr := range addrs {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen())}}
		if addr.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(l, a); err != nil {
			return fmt.Errorf("add %s to %s in %s: %w", addr, link, n.Name, err)
		}
	}
	// Its link-local address too: while it is tentative the node sends no
	// neighbour solicitation for packets it forwards (DirectRouting's pod
	// traffic over eth0), and a lab node is used the moment it is made,
	// where a real node's interface has been up for long.
	if err := n.Sysctl(context.Background(), "net.ipv6.conf."+link+".accept_dad", "0"); err != nil {
		return err
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up in %s: %w", link, n.Name, err)
	}
	return nil
}
