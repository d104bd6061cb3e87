package plugin_test

import (
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/plugin"
	"github.com/weftnet/weft/test/nettest"
)

// TestBadInput: each bad input gives its documented code and message through
// the real binary, and leaves no new reservation and no new veth.
func TestBadInput(t *testing.T) {
	nettest.Privileged(t)
	type call struct {
		list *libcni.NetworkConfigList // nil: raw stdin
		raw  []byte
		rt   *libcni.RuntimeConf
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, n *node, pod *nettest.NS) call
		code  uint
		msg   string
	}{
		{"malformed JSON", func(t *testing.T, n *node, pod *nettest.NS) call {
			return call{raw: []byte(`{"cniVersion":"1.0.0","name":"cbr0","type":"weft",`), rt: rtFor("ctr-bad", pod)}
		}, 6, "unexpected end of JSON"},
		{"mtu is a string", func(t *testing.T, n *node, pod *nettest.NS) call {
			return call{list: n.conflist(t, "", func(w map[string]any) { w["mtu"] = "1400" }), rt: rtFor("ctr-bad", pod)}
		}, 7, `key "mtu" must be int`},
		{"ranges is a string", func(t *testing.T, n *node, pod *nettest.NS) call {
			return call{list: n.conflist(t, "", func(w map[string]any) { w["ipam"] = map[string]any{"ranges": "10.244.1.0/24"} }), rt: rtFor("ctr-bad", pod)}
		}, 7, `key "ipam.ranges"`},
		{"isDefaultGateway is a number", func(t *testing.T, n *node, pod *nettest.NS) call {
			return call{list: n.conflist(t, "", func(w map[string]any) { w["isDefaultGateway"] = 1 }), rt: rtFor("ctr-bad", pod)}
		}, 7, `key "isDefaultGateway" must be bool`},
		{"unknown cniVersion", func(t *testing.T, n *node, pod *nettest.NS) call {
			return call{list: n.conflist(t, "9.9.9", nil), rt: rtFor("ctr-bad", pod)}
		}, 1, "incompatible CNI versions"},
		{"missing subnet.env", func(t *testing.T, n *node, pod *nettest.NS) call {
			n.subnetFile += ".missing"
			return call{list: n.conflist(t, "", nil), rt: rtFor("ctr-bad", pod)}
		}, 11, "is weftd running?"},
		{"incomplete subnet.env", func(t *testing.T, n *node, pod *nettest.NS) call {
			writeFile(t, n.subnetFile, "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_MTU=1450\n")
			return call{list: n.conflist(t, "", nil), rt: rtFor("ctr-bad", pod)}
		}, 11, "FLANNEL_SUBNET"},
		{"subnet exhausted", func(t *testing.T, n *node, pod *nettest.NS) call {
			n.writeSubnetEnv(t, "10.244.1.1/29") // .2-.6 for pods
			list := n.conflist(t, "", nil)
			for i := range 5 {
				p := nettest.NewNS(t, "cp")
				rt := rtFor("ctr-fill-"+string(rune('a'+i)), p)
				if _, err := n.add(list, rt); err != nil {
					t.Fatalf("filling pod %d: %v", i, err)
				}
			}
			return call{list: list, rt: rtFor("ctr-bad", pod)}
		}, 100, "no IP addresses available in range 10.244.1.1-10.244.1.6"},
		{"ifname exists in the pod", func(t *testing.T, n *node, pod *nettest.NS) call {
			h := nettest.Handle(t, pod.NetNS)
			if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "other0"}); err != nil {
				t.Fatal(err)
			}
			return call{list: n.conflist(t, "", nil), rt: rtFor("ctr-bad", pod)}
		}, 101, `interface "eth0" already exists`},
		{"attachment added twice", func(t *testing.T, n *node, pod *nettest.NS) call {
			list := n.conflist(t, "", nil)
			first := rtFor("ctr-bad", nettest.NewNS(t, "cp"))
			if _, err := n.add(list, first); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { // the first attachment survived the refused ADD
				if err := n.check(list, first); err != nil {
					t.Errorf("CHECK of the first attachment: %v", err)
				}
			})
			return call{list: list, rt: rtFor("ctr-bad", pod)}
		}, 102, "ctr-bad/eth0 is already attached"},
		{"bridge name taken by a veth", func(t *testing.T, n *node, pod *nettest.NS) call {
			if err := n.h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "notbr0"}, PeerName: "notbr1"}); err != nil {
				t.Fatal(err)
			}
			return call{list: n.conflist(t, "", func(w map[string]any) { w["bridge"] = "notbr0" }), rt: rtFor("ctr-bad", pod)}
		}, 7, "is a veth, not a bridge"},
		{"netns does not exist", func(t *testing.T, n *node, pod *nettest.NS) call {
			return call{list: n.conflist(t, "", nil), rt: &libcni.RuntimeConf{ContainerID: "ctr-bad", IfName: "eth0", NetNS: "/run/netns/weft-no-such-ns"}}
		}, 8, "open netns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNode(t, "10.244.1.1/24")
			pod := nettest.NewNS(t, "cp")
			c := tt.setup(t, n, pod)
			files, veths, cursor := n.ipFiles(t), n.veths(t), n.lastReserved()
			podLinks, _ := nettest.Handle(t, pod.NetNS).LinkList()
			var err error
			if c.list == nil {
				_, err = n.execRaw(t, "ADD", c.raw, c.rt)
			} else {
				_, err = n.add(c.list, c.rt)
			}
			wantCode(t, err, tt.code, tt.msg)
			if got := n.ipFiles(t); len(got) != len(files) {
				t.Fatalf("reservations %v after the failed ADD, before %v", got, files)
			}
			if got := n.lastReserved(); got != cursor && tt.code != plugin.CodeAlreadyAttached {
				// Only a repeated attachment is found after allocation (by its veth name).
				t.Fatalf("allocator cursor %q after the failed ADD, before %q", got, cursor)
			}
			if got := n.veths(t); len(got) != len(veths) {
				t.Fatalf("node veths %v after the failed ADD, before %v", got, veths)
			}
			if got, _ := nettest.Handle(t, pod.NetNS).LinkList(); len(got) != len(podLinks) {
				t.Fatalf("pod has %d links after the failed ADD, %d before", len(got), len(podLinks))
			}
		})
	}
}
