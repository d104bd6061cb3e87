package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/test/lab"
)

// newNetNS runs `ip netns add name`, opens it and sets lo up.
func newNetNS(name string) (*lab.NetNS, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	path := filepath.Join("/run/netns", name)
	h, err := ns.GetNS(path)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open netns %s: %w", path, err), delNetNS(name))
	}
	n := &lab.NetNS{Name: name, Path: path, NetNS: h}
	if err := n.LinkUp("lo"); err != nil {
		return nil, errors.Join(err, removeNetNS(n))
	}
	return n, nil
}

// removeNetNS closes the handle and deletes the namespace.
func removeNetNS(n *lab.NetNS) error {
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

// addBridge creates an up bridge in n.
func addBridge(n *lab.NetNS, name string) error {
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

// plug connects host to the switch: a veth with port on the switch's bridge
// and eth0 with addr inside host, plus a default route via gw when valid.
func plug(sw *lab.NetNS, bridge, port string, host *lab.NetNS, addr netip.Prefix, gw netip.Addr) error {
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
	hh, err := host.Handle()
	if err != nil {
		return err
	}
	defer hh.Close()
	eth, err := hh.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("find eth0 in %s: %w", host.Name, err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), 32)}}
	if err := hh.AddrAdd(eth, a); err != nil {
		return fmt.Errorf("add %s to eth0 in %s: %w", addr, host.Name, err)
	}
	if err := hh.LinkSetUp(eth); err != nil {
		return fmt.Errorf("set eth0 up in %s: %w", host.Name, err)
	}
	if !gw.IsValid() {
		return nil
	}
	r := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw.AsSlice()}
	if err := hh.RouteAdd(r); err != nil {
		return fmt.Errorf("default route via %s in %s: %w", gw, host.Name, err)
	}
	return nil
}
