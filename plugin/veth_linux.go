package plugin

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
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
	pod     *netnsTrip      // enters podNS from the locked thread, set by add
	podH    *netlink.Handle // netlink in the pod netns, opened by add
}

// createVeth makes the pair in one netlink request: the node side named
// hostName, on the bridge, and down (attach brings it up last); the pod side
// created directly in the pod netns as ifname, with the address-derived MAC.
// An ifname already in the pod netns fails the request with EEXIST, like a
// leftover node side does; the node side's name tells the two apart.
func createVeth(r *rtnl, h *netlink.Handle, br *netlink.Bridge, a *attachment, mtu int) error {
	a.ownVeth = true
	err := r.newVeth(vethSpec{
		name:    a.hostName,
		mac:     hostVethMAC(a.containerID, a.ifname),
		master:  br.Index,
		mtu:     mtu,
		peer:    a.ifname,
		peerMAC: ipMAC(a.ip),
		podNS:   int(a.podNS.Fd()),
	})
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.EEXIST) {
		a.ownVeth = false
		if _, lerr := h.LinkByName(a.hostName); lerr == nil {
			// The name derives from (container ID, ifname): this
			// attachment was added before and never deleted.
			return cniErr(CodeAlreadyAttached, "%s/%s is already attached (veth %s exists): DEL it before adding it again", a.containerID, a.ifname, a.hostName)
		}
		return cniErr(CodeIfNameExists, "interface %q already exists in netns %s", a.ifname, a.podNS.Path())
	}
	return internal(err, "create veth %s (pod side %s)", a.hostName, a.ifname)
}

// configurePod brings the pod side up (without carrier until attach brings
// the node side up) with its address and routes. DAD is switched off
// first: the kernel would otherwise hold IPv6 addresses tentative for about
// a second (k8s#54651), and ADD never waits.
func configurePod(a *attachment, p plan, isDefaultGateway bool) (*netlink.Veth, error) {
	if err := a.pod.do(func() error { return disableDAD(a.ifname) }); err != nil {
		return nil, internal(err, "disable DAD on %s in netns %s", a.ifname, a.podNS.Path())
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

// disableDAD must run inside the pod netns: /proc/sys/net follows the
// netns of the opener. A kernel without IPv6 has no such file; that is fine.
// The first /proc/sys lookup in a netns grows with the number of netns on
// the node (~20 µs + 0.2 µs per netns on the bench machine).
func disableDAD(ifname string) error {
	err := os.WriteFile("/proc/sys/net/ipv6/conf/"+ifname+"/accept_dad", []byte("0"), 0o644)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// netnsTrip moves the calling thread into a netns and back. The caller has
// locked its goroutine to the thread (runtime.LockOSThread) and calls close
// when done, which unlocks it, unless a return trip failed: then the thread
// stays locked, and the runtime ends it when its goroutine exits, so no
// other goroutine ever runs in the wrong netns.
type netnsTrip struct {
	home, target int
	lost         bool
}

// newNetnsTrip holds the calling thread's netns open as the way home.
func newNetnsTrip(target int) (*netnsTrip, error) {
	home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open own netns: %w", err)
	}
	return &netnsTrip{home: home, target: target}, nil
}

// do runs f in the target netns.
func (t *netnsTrip) do(f func() error) error {
	if t.lost {
		return errors.New("thread stranded in another netns")
	}
	if err := unix.Setns(t.target, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter netns: %w", err)
	}
	ferr := f()
	if err := unix.Setns(t.home, unix.CLONE_NEWNET); err != nil {
		t.lost = true
		return fmt.Errorf("return to own netns: %w", err)
	}
	return ferr
}

func (t *netnsTrip) close() {
	_ = unix.Close(t.home)
	if !t.lost {
		runtime.UnlockOSThread()
	}
}
