package backend

import "slices"

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
