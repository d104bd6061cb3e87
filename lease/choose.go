package lease

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrPublicIPInUse: another node (a different NodeName) holds a live lease
// with our PublicIP. Usually two nodes picked the same address (for example
// the Vagrant NAT address); see IPConflictError.
var ErrPublicIPInUse = errors.New("public IP already used by another node")

// IPConflictError names the lease that already advertises our PublicIP.
type IPConflictError struct {
	PublicIP netip.Addr
	Key      string // the other node's lease key
	NodeName string // the other node's name
}

func (e *IPConflictError) Error() string {
	return fmt.Sprintf("public IP %s is already used by node %q (lease %s): set --public-ip or --iface to this node's own address",
		e.PublicIP, e.NodeName, e.Key)
}

// Is makes errors.Is(err, ErrPublicIPInUse) true.
func (e *IPConflictError) Is(target error) bool { return target == ErrPublicIPInUse }

// Choice is what a Store's Acquire should do, given the current leases.
type Choice struct {
	// Existing is our lease to keep (its value is updated if it differs).
	Existing *Lease
	// Stale are our own leases that no longer fit the config: delete them
	// (never a reservation).
	Stale []Lease
	// Subnet and IPv6Subnet are the block to create when Existing is nil.
	Subnet, IPv6Subnet netip.Prefix
	// FromPrev is true when Subnet is req.Prev.
	FromPrev bool
}

// Owns reports whether lease value l belongs to the node asking with a: the
// same explicit NodeName, or the same PublicIP and no other NodeName. A node
// name is an identity only when the operator set it (--node-name; the
// DaemonSet sets spec.nodeName, which Kubernetes keeps unique): without one,
// a.NodeName is empty and identity is the PublicIP, as in flannel.
func Owns(l, a Attrs) bool {
	if a.NodeName != "" && l.NodeName == a.NodeName {
		return true
	}
	return l.PublicIP == a.PublicIP && (l.NodeName == "" || l.NodeName == a.NodeName)
}

// ErrNameConflict: our lease was rewritten by another agent that uses the
// same --node-name from another PublicIP (see NameConflictError).
var ErrNameConflict = errors.New("node name used by two nodes")

// NameConflictError says which two addresses claim one node name. It matches
// ErrNameConflict and ErrLeaseLost with errors.Is.
type NameConflictError struct {
	Key      string     // the lease key both claim
	NodeName string     // the shared --node-name
	Ours     netip.Addr // this node's PublicIP
	Theirs   netip.Addr // the PublicIP now in the lease
}

func (e *NameConflictError) Error() string {
	return fmt.Sprintf("lease %s of node %q was taken over by the agent at %s, while this node (%s) holds it: two nodes use --node-name %q; give every node its own name (the DaemonSet uses spec.nodeName) or leave --node-name unset so that the public IP identifies the node",
		e.Key, e.NodeName, e.Theirs, e.Ours, e.NodeName)
}

// Is makes errors.Is(err, ErrNameConflict) and errors.Is(err, ErrLeaseLost) true.
func (e *NameConflictError) Is(target error) bool {
	return target == ErrNameConflict || target == ErrLeaseLost
}

// Judge classifies the value cur now stored at our key (held by us as mine):
// nil when it is still ours (same PublicIP, same identity), a
// *NameConflictError when another PublicIP wrote it under our explicit
// NodeName, and an error matching ErrLeaseLost when it belongs to another
// node altogether.
func Judge(key string, cur, mine Attrs) error {
	switch {
	case cur.PublicIP == mine.PublicIP && Owns(cur, mine):
		return nil
	case mine.NodeName != "" && cur.NodeName == mine.NodeName:
		return &NameConflictError{Key: key, NodeName: mine.NodeName, Ours: mine.PublicIP, Theirs: cur.PublicIP}
	}
	return fmt.Errorf("key %s now held by %s (node %q): %w", key, cur.PublicIP, cur.NodeName, ErrLeaseLost)
}

// Choose applies flannel's acquire order to the current leases:
// (1) our lease (by NodeName first, then by PublicIP) if it fits cfg, (2)
// req.Prev if it fits and is free, (3) a random free block. It fails with an
// *IPConflictError when another named node holds our PublicIP, and with an
// *OutOfSubnetsError when no block is free.
func Choose(cfg *Network, leases []Lease, req Request) (Choice, error) {
	var c Choice
	taken := make(map[netip.Prefix]bool, len(leases))
	var byName, byIP *Lease
	for i := range leases {
		l := &leases[i]
		taken[l.Subnet] = true
		a := l.Attrs
		sameIP := a.PublicIP == req.Attrs.PublicIP
		named := req.Attrs.NodeName != "" && a.NodeName == req.Attrs.NodeName
		switch {
		case named:
		case sameIP && (a.NodeName == "" || a.NodeName == req.LegacyName):
		case sameIP:
			return Choice{}, &IPConflictError{PublicIP: a.PublicIP, Key: l.Key(), NodeName: a.NodeName}
		default:
			continue
		}
		if !cfg.FitsLease(*l) {
			// Only a lease with our PublicIP is certainly ours: one matched
			// by name alone may be another live node's (a duplicated
			// --node-name), so it is left to expire, never deleted.
			if sameIP && !l.Reservation {
				c.Stale = append(c.Stale, *l)
			}
			continue
		}
		if named {
			if byName == nil {
				byName = l
			}
		} else if byIP == nil {
			byIP = l
		}
	}
	if byName != nil {
		c.Existing = byName
		return c, nil
	}
	if byIP != nil {
		c.Existing = byIP
		return c, nil
	}
	for _, s := range c.Stale {
		delete(taken, s.Subnet)
	}
	if req.Prev.IsValid() && cfg.Fits(req.Prev) && !taken[req.Prev] {
		c.Subnet, c.FromPrev = req.Prev, true
		c.IPv6Subnet = cfg.IPv6For(req.Prev)
		if cfg.FitsIPv6(req.PrevIPv6) {
			c.IPv6Subnet = req.PrevIPv6
		}
		return c, nil
	}
	var err error
	c.Subnet, c.IPv6Subnet, err = cfg.PickFree(taken)
	if err != nil {
		return Choice{}, err
	}
	return c, nil
}
