// Package nettest holds helpers for privileged tests: a gate and throw-away
// network namespaces that are always removed in t.Cleanup.
package nettest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Privileged skips the test unless it runs as root and not with -short.
func Privileged(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("privileged test skipped with -short")
	}
	if os.Geteuid() != 0 {
		tb.Skip("privileged test needs root")
	}
}

// NS is a named network namespace (visible to `ip netns`) made for one test.
type NS struct {
	Name string
	Path string // /run/netns/<Name>
	ns.NetNS
}

// NewNS creates a fresh named netns with lo up, and removes it in t.Cleanup.
// The name starts with prefix, so leftovers are easy to attribute.
func NewNS(tb testing.TB, prefix string) *NS {
	tb.Helper()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := prefix + "-" + hex.EncodeToString(rnd[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	path := filepath.Join("/run/netns", name)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	n, err := ns.GetNS(path)
	if err != nil {
		tb.Fatalf("open netns %s: %v", path, err)
	}
	tb.Cleanup(func() { _ = n.Close() })
	h := Handle(tb, n)
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		tb.Fatalf("set lo up in %s: %v", name, err)
	}
	return &NS{Name: name, Path: path, NetNS: n}
}

// Handle returns a netlink handle bound to n, closed in t.Cleanup.
func Handle(tb testing.TB, n ns.NetNS) *netlink.Handle {
	tb.Helper()
	h, err := netlink.NewHandleAt(netns.NsHandle(n.Fd()))
	if err != nil {
		tb.Fatalf("netlink handle in %s: %v", n.Path(), err)
	}
	tb.Cleanup(h.Close)
	return h
}

// Exec runs a command inside the namespace (ip netns exec) and returns its combined output.
func (n *NS) Exec(tb testing.TB, name string, args ...string) (string, error) {
	tb.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Veth creates a veth pair with one end in a and the other in b, assigns the
// given CIDR addresses (empty = none) and sets both up.
func Veth(tb testing.TB, a *NS, aName, aAddr string, b *NS, bName, bAddr string) {
	tb.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ha := Handle(tb, a.NetNS)
	la := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: aName}, PeerName: bName, PeerNamespace: netlink.NsFd(int(b.Fd()))}
	if err := ha.LinkAdd(la); err != nil {
		tb.Fatalf("add veth %s/%s: %v", aName, bName, err)
	}
	hb := Handle(tb, b.NetNS)
	for _, side := range []struct {
		h    *netlink.Handle
		name string
		addr string
	}{{ha, aName, aAddr}, {hb, bName, bAddr}} {
		l, err := side.h.LinkByName(side.name)
		if err != nil {
			tb.Fatalf("find %s: %v", side.name, err)
		}
		if side.addr != "" {
			addr, err := netlink.ParseAddr(side.addr)
			if err != nil {
				tb.Fatalf("parse %s: %v", side.addr, err)
			}
			if err := side.h.AddrAdd(l, addr); err != nil {
				tb.Fatalf("add %s to %s: %v", side.addr, side.name, err)
			}
		}
		if err := side.h.LinkSetUp(l); err != nil {
			tb.Fatalf("set %s up: %v", side.name, err)
		}
	}
}
