package backend

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
	c := newState(len(s.neigh))
	for ip, n := range s.neigh {
		c.neigh[ip] = n
	}
	for mac, dsts := range s.fdb {
		for _, d := range dsts {
			c.addFDB(fdbEntry{MAC: mac, Dst: d})
		}
	}
	for _, rs := range s.route {
		for _, r := range rs {
			c.addRoute(r)
		}
	}
	return c
}
