package backend

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/host"
)

// diff is the full diff of a kernel view as one dump would give it: every
// entry starts as an orphan, rehome finds its owner, and diffOwner runs for
// every owner (as a reconcile does).
func diff(have state, want desired) []op {
	e := executor{}
	e.reset(have.clone())
	e.rehome(want.t)
	return diffOwners(e.have, want, allOwners(e.have, want))
}

// clone copies s (rehome moves entries out of the orphans).
func (s state) clone() state {
	return state{neigh: slices.Clone(s.neigh), fdb: slices.Clone(s.fdb), route: slices.Clone(s.route)}
}

// TestIncrementalConverges: the changes the old per-peer diff was checked
// against, made by SetPeers over the Fake (which diffs only the touched
// owners), leave the kernel where a reconcile finds nothing to write and, in
// proactive mode, where programming the final list from scratch gets.
func TestIncrementalConverges(t *testing.T) {
	base := manyPeers(20)
	with := func(i int, change func(*Peer)) []Peer {
		ps := slices.Clone(base)
		change(&ps[i])
		return ps
	}
	swapped := slices.Clone(base)
	swapped[3].VtepMAC, swapped[4].VtepMAC = base[4].VtepMAC, base[3].VtepMAC
	heir := manyPeers(21)[20]
	heir.VtepMAC = base[7].VtepMAC
	many := append(slices.Delete(slices.Clone(base), 2, 4), manyPeers(22)[20:]...)
	many[5].PublicIP = netip.MustParseAddr("198.18.3.6")
	tests := []struct {
		name   string
		mode   Mode
		misses []string // L3 misses answered before the change
		after  []Peer
	}{
		{name: "add one", after: manyPeers(21)},
		{name: "remove one", after: slices.Delete(slices.Clone(base), 5, 6)},
		{name: "new VtepMAC", after: with(6, func(p *Peer) { p.VtepMAC = macX })},
		{name: "new PublicIP", after: with(6, func(p *Peer) { p.PublicIP = netip.MustParseAddr("198.18.3.7") })},
		{name: "two peers swap VtepMACs", after: swapped},
		{name: "a VtepMAC moves from a removed peer to a new one", after: append(slices.Delete(slices.Clone(base), 7, 8), heir)},
		{name: "several at once", after: many},
		{name: "on-demand: activations by misses", mode: ModeOnDemand, misses: []string{"10.244.12.5", "10.244.14.0"}, after: base},
		{name: "on-demand: active peer with pod-IP neighbours removed", mode: ModeOnDemand,
			misses: []string{"10.244.12.5", "10.244.12.6", "10.244.13.0"}, after: slices.Delete(slices.Clone(base), 2, 3)},
		{name: "on-demand: active peer with pod-IP neighbours gets a new VtepMAC", mode: ModeOnDemand,
			misses: []string{"10.244.12.5", "10.244.12.6"}, after: with(2, func(p *Peer) { p.VtepMAC = macX })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mode := cmp.Or(tc.mode, ModeProactive)
			f := host.NewFake()
			v := newFakeVXLAN(t, f, mode, Observer{})
			dev, err := v.EnsureDevice()
			if err != nil {
				t.Fatal(err)
			}
			if err := v.SetPeers(base); err != nil {
				t.Fatal(err)
			}
			for _, ip := range tc.misses {
				u := l3Miss(ip)
				u.LinkIndex = dev.Index
				if err := v.HandleMiss(u); err != nil {
					t.Fatal(err)
				}
			}
			if err := v.SetPeers(tc.after); err != nil {
				t.Fatal(err)
			}
			if mode == ModeProactive {
				checkConverged(t, f, v, tc.after)
				return
			}
			f.ResetOps()
			if err := v.reconcile(); err != nil {
				t.Fatal(err)
			}
			if ops := entryOps(f.Ops()); len(ops) != 0 {
				t.Errorf("reconcile after incremental programming wrote %q", ops)
			}
		})
	}
}

// entryOps keeps the neighbour, FDB and route writes of ops.
func entryOps(ops []string) []string {
	var res []string
	for _, op := range ops {
		if strings.HasPrefix(op, "neigh ") || strings.HasPrefix(op, "fdb ") || strings.HasPrefix(op, "route ") {
			res = append(res, op)
		}
	}
	return res
}

// TestStaleAnswerRepaired: an answer decided from a peer that has changed
// since (here b's old VtepMAC) is recorded in its owner's bucket and repaired
// by the programming that takes it, not left for the next reconcile.
func TestStaleAnswerRepaired(t *testing.T) {
	f, v, _ := programmedFake(t)
	old := v.model.table.get(peerB().Subnet)
	moved := peerB()
	moved.VtepMAC = macX
	if err := v.SetPeers([]Peer{moved, peerC()}); err != nil {
		t.Fatal(err)
	}
	// The answer lands after the change: the old MAC's FDB entry is back.
	stale := op{kind: opFDBSet, peer: old.Subnet, fdb: fdbEntry{MAC: old.mac, Dst: old.PublicIP}}
	if err := writeOp(f, int(v.device.devIndex.Load()), 0, stale); err != nil {
		t.Fatal(err)
	}
	v.resp.note(answered{peer: old, ops: [2]op{stale}, n: 1})
	f.ResetOps()
	v.takeAnswers()
	if d := gocmp.Diff([]string{"fdb del 0a:00:00:00:00:02 dev flannel.1 self dst 198.18.0.2"}, f.Ops()); d != "" {
		t.Errorf("writes (-want +got):\n%s", d)
	}
}

// TestDiffOwnerKeepsFDBAnotherPeerWants: a stale FDB entry left in one
// owner's bucket is not deleted while another peer wants exactly that entry
// (a VtepMAC and PublicIP that moved to another subnet).
func TestDiffOwnerKeepsFDBAnotherPeerWants(t *testing.T) {
	b := peerB()
	heir := peerC()
	heir.VtepMAC, heir.PublicIP = b.VtepMAC, b.PublicIP
	d := desiredOf(t, ModeProactive, netip.Prefix{}, nil, tablePeers(t, nil, heir))
	have := stateOf(t, "fdb 0a:00:00:00:00:02 198.18.0.2", "neigh 10.244.2.0 0a:00:00:00:00:02 permanent")
	got := opStrings(diffOwner(nil, b.Subnet, have, peerWant{subnet: b.Subnet}, nil, d))
	if d := gocmp.Diff([]string{"neigh del 10.244.2.0 lladdr 0a:00:00:00:00:02 permanent"}, got); d != "" {
		t.Errorf("ops (-want +got):\n%s", d)
	}
}
