package backend

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

// These benchmarks measure the datapath's own cost of SetPeers and of miss
// answers (`go test -run ^$ -bench . ./backend/`). Each runs over the Fake
// ("fake") and over nopNetlink ("nop"), a Fake whose entry writes do
// nothing: the Fake's own bookkeeping is O(N) per route and FDB write, so
// "nop" is the datapath's overhead alone.

// nopNetlink is a Fake whose neighbour, FDB and route writes succeed
// without being kept or recorded.
type nopNetlink struct{ *host.Fake }

func (nopNetlink) NeighSet(*netlink.Neigh) error     { return nil }
func (nopNetlink) NeighDel(*netlink.Neigh) error     { return nil }
func (nopNetlink) RouteReplace(*netlink.Route) error { return nil }
func (nopNetlink) RouteDel(*netlink.Route) error     { return nil }

// benchPeers returns n distinct peers with /26 subnets in 10.0.0.0/8.
func benchPeers(n int) []Peer {
	peers := make([]Peer, n)
	for i := range peers {
		j := uint32(i + 1)
		sub := netip.AddrFrom4([4]byte{10, byte(j >> 10), byte(j >> 2), byte(j << 6)})
		peers[i] = Peer{
			Subnet:   netip.PrefixFrom(sub, 26),
			PublicIP: netip.AddrFrom4([4]byte{198, 19, byte(j >> 8), byte(j)}),
			VtepMAC:  net.HardwareAddr{0x0a, 0x01, 0, byte(j >> 16), byte(j >> 8), byte(j)},
			Name:     fmt.Sprintf("node-%d", j),
		}
	}
	return peers
}

// benchVXLAN returns an ensured datapath over a new Fake (wrapped by wrap).
func benchVXLAN(b *testing.B, nop bool, mode Mode) (*VXLAN, *host.Fake) {
	b.Helper()
	f := host.NewFake()
	idx := f.AddUnderlay("eth0", 1500, netip.MustParsePrefix("198.18.0.1/15"))
	var nl host.Host = f
	if nop {
		nl = nopNetlink{f}
	}
	v, err := New(nl, Config{
		Device:  DeviceConfig{LocalIP: netip.MustParseAddr("198.18.0.1"), UnderlayIndex: idx},
		Mode:    mode,
		Network: netip.MustParsePrefix("10.0.0.0/8"),
	}, nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := v.EnsureDevice(); err != nil {
		b.Fatal(err)
	}
	return v, f
}

func forBoth(b *testing.B, run func(b *testing.B, nop bool)) {
	for _, nop := range []bool{false, true} {
		name := "fake"
		if nop {
			name = "nop"
		}
		b.Run(name, func(b *testing.B) { run(b, nop) })
	}
}

// BenchmarkSetPeersAddOne: 1000 peers programmed; each op is one SetPeers
// that adds a peer (even ops) or removes it again (odd ops), as the agent
// calls it after one lease event.
func BenchmarkSetPeersAddOne(b *testing.B) {
	forBoth(b, func(b *testing.B, nop bool) {
		v, f := benchVXLAN(b, nop, ModeProactive)
		all := benchPeers(1001)
		without, with := all[:1000], all
		if err := v.SetPeers(without); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			peers := with
			if i%2 == 1 {
				peers = without
			}
			if err := v.SetPeers(peers); err != nil {
				b.Fatal(err)
			}
			if i%1024 == 0 {
				f.ResetOps()
			}
		}
	})
}

// BenchmarkSetPeers5000: 5000 peers onto an empty device, in one SetPeers
// ("bulk", a cold start) or in 40 growing SetPeers of 125 new peers each
// ("batches", the watch delivering etcd transactions to a running agent).
func BenchmarkSetPeers5000(b *testing.B) {
	all := benchPeers(5000)
	for _, batches := range []int{1, 40} {
		name := "bulk"
		if batches > 1 {
			name = "batches"
		}
		b.Run(name, func(b *testing.B) {
			forBoth(b, func(b *testing.B, nop bool) {
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					v, _ := benchVXLAN(b, nop, ModeProactive)
					b.StartTimer()
					step := len(all) / batches
					for n := step; n <= len(all); n += step {
						if err := v.SetPeers(all[:n]); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		})
	}
}

// BenchmarkMissActivate: an on-demand datapath with 1000 peers; each op
// answers an L3 miss for a pod IP of a peer not yet active and lets the
// control loop take the answer (which activates the peer).
func BenchmarkMissActivate(b *testing.B) {
	forBoth(b, func(b *testing.B, nop bool) {
		v, _ := benchVXLAN(b, nop, ModeOnDemand)
		peers := benchPeers(1000)
		if err := v.SetPeers(peers); err != nil {
			b.Fatal(err)
		}
		dev := int(v.device.devIndex.Load())
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			k := i % len(peers)
			if k == 0 && i > 0 {
				b.StopTimer()
				if err := v.SetPeers(nil); err != nil {
					b.Fatal(err)
				}
				if err := v.SetPeers(peers); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			u := netlink.NeighUpdate{Type: unix.RTM_GETNEIGH}
			u.Neigh = netlink.Neigh{LinkIndex: dev, Family: unix.AF_INET, State: netlink.NUD_INCOMPLETE,
				IP: peers[k].Subnet.Addr().Next().Next().AsSlice()}
			if err := v.HandleMiss(u); err != nil {
				b.Fatal(err)
			}
			v.takeAnswers()
		}
	})
}
