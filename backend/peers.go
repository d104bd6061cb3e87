package backend

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
)

// This file turns a SetPeers list into changes of the wanted peers. Nothing
// here does I/O: DirectRouting is decided from the underlay routes listed
// at the last kernel dump.

// model is what the datapath wants: the peers as SetPeers last gave them
// (the published peerTable), the peers a miss activated (on demand) and the
// DirectRouting decisions.
type model struct {
	cfg   Config
	table *peerTable // as last published; the control side edits a copy
	// slots is the control side's own index of the table's peers, with the
	// SetPeers call that last listed each (to find duplicates and peers no
	// longer listed without allocating).
	slots  map[netip.Prefix]*slot
	gen    uint64
	active map[netip.Prefix]bool // on-demand: peers programmed because a miss asked
	under  underlayRoutes        // DirectRouting: the main table at the last dump
	routes []routeEntry          // the peerless routes, computed once
	// set: SetPeers has been called. Until then nothing is known about
	// peers, so reconciles must not delete entries (a restarted agent's Run
	// may start before its first SetPeers).
	set bool
}

type slot struct {
	p    *tablePeer
	seen uint64
}

func newModel(cfg Config) model {
	return model{cfg: cfg, table: newPeerTable(cfg.Mode), slots: map[netip.Prefix]*slot{}, active: map[netip.Prefix]bool{}}
}

func (m *model) desired() desired {
	if m.routes == nil {
		m.routes = newDesired(m.table, m.cfg.Network, m.active).routes
	}
	return desired{t: m.table, active: m.active, routes: m.routes}
}

// update makes the table hold the given peers and returns the peers added,
// changed and removed. A peer identical to the one in the table costs a map
// lookup and a comparison; only added and changed peers are validated. A
// peer whose subnet is listed twice, or whose VtepMAC another peer claims
// (the peer already programmed keeps it), is rejected, as is an invalid one;
// the errors are returned and the other peers kept.
func (m *model) update(peers []Peer) ([]peerChange, []error) {
	m.gen++
	var errs []error
	var fresh []*tablePeer              // added or changed, in the caller's order
	var added map[netip.Prefix]struct{} // subnets of added peers, to catch duplicates
	listed := 0                         // table peers listed again
	for i := range peers {
		p := &peers[i]
		cur := m.slots[p.Subnet.Masked()]
		if cur != nil && cur.seen == m.gen {
			errs = append(errs, fmt.Errorf("%w %s: subnet %s listed twice", ErrInvalidPeer, p.Name, cur.p.Subnet))
			continue
		}
		if cur != nil && cur.p.same(p) {
			cur.seen = m.gen
			listed++
			continue
		}
		tp, err := validatePeer(*p, m.cfg.Device.LocalIP)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if cur != nil {
			cur.seen = m.gen
			listed++
		} else if _, dup := added[tp.Subnet]; dup {
			errs = append(errs, fmt.Errorf("%w %s: subnet %s listed twice", ErrInvalidPeer, p.Name, tp.Subnet))
			continue
		} else {
			if added == nil {
				added = make(map[netip.Prefix]struct{}, len(peers)-i)
			}
			added[tp.Subnet] = struct{}{}
		}
		tp.direct = m.isDirect(tp.PublicIP)
		fresh = append(fresh, tp)
	}
	t := m.table.edit()
	var changes []peerChange
	if listed < len(m.slots) {
		changes = m.removeUnlisted(t, changes)
	}
	changes, errs = m.addPeers(t, fresh, changes, errs)
	m.table = t
	return changes, errs
}

// removeUnlisted drops the peers the last update did not list.
func (m *model) removeUnlisted(t *peerTable, changes []peerChange) []peerChange {
	for s, sl := range m.slots {
		if sl.seen != m.gen {
			t.remove(sl.p)
			delete(m.slots, s)
			delete(m.active, s)
			changes = append(changes, peerChange{old: sl.p})
		}
	}
	return changes
}

// addPeers puts fresh peers in t in place of the peers with their subnets.
// Every replaced peer leaves first, so VtepMACs may move between peers
// within one call.
func (m *model) addPeers(t *peerTable, fresh []*tablePeer, changes []peerChange, errs []error) ([]peerChange, []error) {
	if n := len(m.slots) + len(fresh); n > 2*len(m.slots) {
		m.slots = copyMap(m.slots, n) // a bulk SetPeers would otherwise regrow it many times
		t.reserve(n)
	}
	olds := make([]*tablePeer, len(fresh))
	for i, p := range fresh {
		if olds[i] = t.get(p.Subnet); olds[i] != nil {
			t.remove(olds[i])
		}
	}
	for i, p := range fresh {
		if err := t.add(p); err != nil {
			errs = append(errs, err)
			if olds[i] != nil {
				delete(m.slots, p.Subnet)
				delete(m.active, p.Subnet)
				changes = append(changes, peerChange{old: olds[i]})
			}
			continue
		}
		if sl := m.slots[p.Subnet]; sl != nil {
			sl.p, sl.seen = p, m.gen
		} else {
			m.slots[p.Subnet] = &slot{p: p, seen: m.gen}
		}
		changes = append(changes, peerChange{old: olds[i], cur: p})
	}
	return changes, errs
}

// redecideDirect re-decides DirectRouting for every peer from a new
// snapshot of the underlay routes, and returns the peers that flipped.
func (m *model) redecideDirect(under underlayRoutes, changes []peerChange, errs []error) ([]peerChange, []error) {
	m.under = under
	if !m.cfg.DirectRouting {
		return changes, errs
	}
	var flipped []*tablePeer
	for _, p := range m.table.bySubnet.all() {
		if d := m.isDirect(p.PublicIP); d != p.direct {
			np := *p
			np.direct = d
			flipped = append(flipped, &np)
		}
	}
	if len(flipped) == 0 {
		return changes, errs
	}
	t := m.table.edit()
	changes, errs = m.addPeers(t, flipped, changes, errs)
	m.table = t
	return changes, errs
}

// isDirect decides DirectRouting for a public IP: the underlay's route to it
// is direct (no gateway) on the underlay link.
func (m *model) isDirect(ip netip.Addr) bool {
	return m.cfg.DirectRouting && m.under.direct(ip, m.cfg.Device.UnderlayIndex)
}

// activate marks p active (on demand) if it is still the table's peer for
// its subnet and was not; it reports whether it did.
func (m *model) activate(p *tablePeer) bool {
	cur := m.table.get(p.Subnet)
	if m.cfg.Mode != ModeOnDemand || cur == nil || m.active[cur.Subnet] ||
		cur.mac != p.mac || cur.PublicIP != p.PublicIP || cur.direct != p.direct {
		return false
	}
	m.active[cur.Subnet] = true
	return true
}

// adopt marks as active (on demand) every peer whose bucket holds entries,
// so a restart keeps what misses had programmed.
func (m *model) adopt(have owned) []*tablePeer {
	if m.cfg.Mode != ModeOnDemand {
		return nil
	}
	var adopted []*tablePeer
	for s, b := range have {
		p := m.table.get(s)
		if p != nil && !p.direct && !m.active[s] && !b.empty() {
			m.active[s] = true
			adopted = append(adopted, p)
		}
	}
	return adopted
}

func copyMap[K comparable, V any](m map[K]V, n int) map[K]V {
	c := make(map[K]V, n)
	for k, v := range m {
		c[k] = v
	}
	return c
}

// logChanges writes one Debug line per peer added, changed or removed (the
// agent logs each lease event at Info; a bulk SetPeers would otherwise log
// every peer twice).
func logChanges(log *slog.Logger, changes []peerChange) {
	if len(changes) == 0 || !log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	for _, c := range changes {
		o, p := c.old, c.cur
		switch {
		case o == p:
		case o == nil:
			log.Debug("peer added", "peer", p.Name, "subnet", p.Subnet, "public_ip", p.PublicIP, "vtep_mac", p.mac, "direct", p.direct)
		case p == nil:
			log.Debug("peer removed", "peer", o.Name, "subnet", o.Subnet, "public_ip", o.PublicIP)
		default:
			log.Debug("peer changed", "peer", p.Name, "subnet", p.Subnet, "public_ip", p.PublicIP, "old_public_ip", o.PublicIP,
				"vtep_mac", p.mac, "old_vtep_mac", o.mac, "direct", p.direct)
		}
	}
}
