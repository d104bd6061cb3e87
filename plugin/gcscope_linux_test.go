package plugin_test

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/weftnet/weft/test/nettest"
)

// TestGCScopedByNetwork: two networks (two conflist names) share cni0 and the
// node's subnet, with disjoint ranges. GC of one network with an empty list of
// valid attachments removes that network's pods (new tags, a legacy unscoped
// tag backed by the network's own reservation, a veth whose reservation is
// gone) and nothing of the other network: its veths, reservations and traffic
// stay, and so does a legacy-tagged veth that no reservation of the GC'd
// network names.
func TestGCScopedByNetwork(t *testing.T) {
	nettest.Privileged(t)
	n := newNode(t, "10.244.1.1/24")
	const nameA, nameB = "cbr0", "weft-second_net.b"
	listA := namedConflist(t, n, nameA, "10.244.1.10", "10.244.1.49")
	listB := namedConflist(t, n, nameB, "10.244.1.50", "10.244.1.89")

	type pod struct {
		ns  *nettest.NS
		rt  *libcni.RuntimeConf
		res *current.Result
	}
	add := func(list *libcni.NetworkConfigList, id string) *pod {
		t.Helper()
		p := &pod{ns: nettest.NewNS(t, "cp")}
		p.rt = rtFor(id, p.ns)
		res, err := n.add(list, p.rt)
		if err != nil {
			t.Fatalf("ADD %s to %s: %v", id, list.Name, err)
		}
		if p.res, err = current.NewResultFromResult(res); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a1, a2, aLegacy, aOrphan := add(listA, "ctr-a1"), add(listA, "ctr-a2"), add(listA, "ctr-a-legacy"), add(listA, "ctr-a-orphan")
	b1, b2, bLegacy, bUnknown := add(listB, "ctr-b1"), add(listB, "ctr-b2"), add(listB, "ctr-b-legacy"), add(listB, "ctr-b-unknown")

	// Pods attached by an earlier release carry the unscoped tag.
	for _, p := range []*pod{aLegacy, bLegacy, bUnknown} {
		setAlias(t, n, p.res.Interfaces[1].Name, "weft:"+p.rt.ContainerID+"/eth0")
	}
	// aOrphan lost its reservation: only its tag says whose it is. bUnknown
	// lost its reservation too, and its tag names no network: nothing proves
	// it belongs to A, so A's GC must keep it.
	removeReservation(t, n, nameA, aOrphan.rt.ContainerID)
	removeReservation(t, n, nameB, bUnknown.rt.ContainerID)
	if got := len(reservations(t, n, nameA)); got != 3 {
		t.Fatalf("network %s holds %d reservations before GC, want 3", nameA, got)
	}
	if got := len(reservations(t, n, nameB)); got != 3 {
		t.Fatalf("network %s holds %d reservations before GC, want 3", nameB, got)
	}
	bFiles := reservations(t, n, nameB)

	// GC through a runtime with no cached attachments: the plugin's own GC
	// does the work, not libcni's DEL of cached attachments.
	gc := libcni.NewCNIConfigWithCacheDir([]string{cniPath(t)}, t.TempDir(), nil)
	if err := n.in(func() error {
		return gc.GCNetworkList(context.Background(), listA, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}})
	}); err != nil {
		t.Fatalf("GC of %s: %v", nameA, err)
	}

	veths := n.veths(t)
	for _, p := range []*pod{b1, b2, bLegacy, bUnknown} {
		if name := p.res.Interfaces[1].Name; !slices.Contains(veths, name) {
			t.Errorf("GC of %s deleted veth %s of %s in network %s", nameA, name, p.rt.ContainerID, nameB)
		}
	}
	for _, p := range []*pod{a1, a2, aLegacy, aOrphan} {
		if name := p.res.Interfaces[1].Name; slices.Contains(veths, name) {
			t.Errorf("GC of %s kept veth %s of its own stale pod %s", nameA, name, p.rt.ContainerID)
		}
		if _, err := nettest.Handle(t, p.ns.NetNS).LinkByName("eth0"); err == nil {
			t.Errorf("GC of %s left eth0 in %s's netns", nameA, p.rt.ContainerID)
		}
	}
	if got := reservations(t, n, nameA); len(got) != 0 {
		t.Errorf("GC of %s kept its stale reservations %v", nameA, got)
	}
	if got := reservations(t, n, nameB); !maps.Equal(got, bFiles) {
		t.Errorf("GC of %s changed %s's reservations: %v, want %v", nameA, nameB, got, bFiles)
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, p := range []*pod{b1, b2, bLegacy} {
		if err := n.check(listB, p.rt); err != nil {
			t.Fatalf("CHECK of %s in %s after GC of %s: %v", p.rt.ContainerID, nameB, nameA, err)
		}
	}
	ip := func(p *pod) string { return p.res.IPs[0].Address.IP.String() }
	ping(t, b1.ns, ip(b2))
	ping(t, b2.ns, ip(bLegacy))
	ping(t, bUnknown.ns, ip(b1))
	ping(t, b1.ns, "10.244.1.1")
	if out, err := n.ns.Exec(t, "ping", "-c", "1", "-W", "2", ip(bLegacy)); err != nil {
		t.Fatalf("ping %s from the node: %v\n%s", ip(bLegacy), err, out)
	}

	// New attachments carry their network's name.
	if got, want := alias(t, n, b1.res.Interfaces[1].Name), "weft@"+nameB+":ctr-b1/eth0"; got != want {
		t.Fatalf("alias of %s = %q, want %q", b1.res.Interfaces[1].Name, got, want)
	}

	// B's own GC, keeping b1 and b2, takes its legacy pod (its reservation
	// is in B's directory) and still not bUnknown.
	valid := []types.GCAttachment{{ContainerID: "ctr-b1", IfName: "eth0"}, {ContainerID: "ctr-b2", IfName: "eth0"}}
	if err := n.in(func() error {
		return gc.GCNetworkList(context.Background(), listB, &libcni.GCArgs{ValidAttachments: valid})
	}); err != nil {
		t.Fatalf("GC of %s: %v", nameB, err)
	}
	veths = n.veths(t)
	want := []string{b1.res.Interfaces[1].Name, b2.res.Interfaces[1].Name, bUnknown.res.Interfaces[1].Name}
	slices.Sort(want)
	if !slices.Equal(veths, want) {
		t.Fatalf("after GC of %s: veths %v, want %v (b1, b2, b-unknown)", nameB, veths, want)
	}
	if got := len(reservations(t, n, nameB)); got != 2 {
		t.Fatalf("after GC of %s: %d reservations, want 2", nameB, got)
	}
	ping(t, b1.ns, ip(b2))
}

// namedConflist is the manifest's conflist named name, its weft plugin
// allocating rangeStart-rangeEnd of the node's 10.244.1.0/24.
func namedConflist(t *testing.T, n *node, name, rangeStart, rangeEnd string) *libcni.NetworkConfigList {
	t.Helper()
	base := n.conflist(t, "", func(w map[string]any) {
		w["ipam"] = map[string]any{"ranges": [][]map[string]string{{{
			"subnet": "10.244.1.0/24", "rangeStart": rangeStart, "rangeEnd": rangeEnd,
		}}}}
	})
	var m map[string]any
	if err := json.Unmarshal(base.Bytes, &m); err != nil {
		t.Fatal(err)
	}
	m["name"] = name
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// reservations maps address to file content in network's IPAM directory.
func reservations(t *testing.T, n *node, network string) map[string]string {
	t.Helper()
	out := map[string]string{}
	dir := filepath.Join(n.dataDir, network)
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Count(e.Name(), ".") != 3 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

// removeReservation deletes id's reservation files in network's directory.
func removeReservation(t *testing.T, n *node, network, id string) {
	t.Helper()
	for ip, c := range reservations(t, n, network) {
		if strings.HasPrefix(c, id+"\r\n") {
			if err := os.Remove(filepath.Join(n.dataDir, network, ip)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func setAlias(t *testing.T, n *node, veth, alias string) {
	t.Helper()
	l, err := n.h.LinkByName(veth)
	if err == nil {
		err = n.h.LinkSetAlias(l, alias)
	}
	if err != nil {
		t.Fatalf("set alias of %s: %v", veth, err)
	}
}

func alias(t *testing.T, n *node, veth string) string {
	t.Helper()
	l, err := n.h.LinkByName(veth)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Alias
}
