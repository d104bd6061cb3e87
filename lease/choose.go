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
	PublicIP netip.Addr // our PublicAddr: the PublicIPv6 in an IPv6-only network
	Key      string     // the other node's lease key
	NodeName string     // the other node's name
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
	// Subnet and IPv6Subnet are the blocks to create when Existing is nil,
	// each the zero Prefix when its family is off.
	Subnet, IPv6Subnet netip.Prefix
	// FromPrev is true when Subnet is req.Prev.
	FromPrev bool
	// FromPrevIPv6 is true when IPv6Subnet is req.PrevIPv6.
	FromPrevIPv6 bool
}

// Owns reports whether lease value l belongs to the node asking with a: the
// same explicit NodeName, or the same address and no other NodeName. The
// address is PublicIP when a has one (IPv4 is on), else PublicIPv6 (an
// IPv6-only node). A node name is an identity only when the operator set it
// (--node-name; the DaemonSet sets spec.nodeName, which Kubernetes keeps
// unique): without one, a.NodeName is empty and identity is the address, as
// in flannel.
func Owns(l, a Attrs) bool {
	if a.NodeName != "" && l.NodeName == a.NodeName {
		return true
	}
	return sameAddr(l, a) && (l.NodeName == "" || l.NodeName == a.NodeName)
}

// sameAddr reports whether lease value l was published from a's address: the
// same PublicIP when both have one, else the same PublicIPv6 (an IPv6-only
// node has no PublicIP; so has its old lease when the network became dual
// stack, which is then still found as ours). An unset address matches
// nothing.
func sameAddr(l, a Attrs) bool {
	if a.PublicIP.IsValid() && l.PublicIP.IsValid() {
		return l.PublicIP == a.PublicIP
	}
	return a.PublicIPv6.IsValid() && l.PublicIPv6 == a.PublicIPv6
}

// ErrNameConflict: our lease was rewritten by another agent that uses the
// same --node-name from another PublicIP (see NameConflictError).
var ErrNameConflict = errors.New("node name used by two nodes")

// NameConflictError says which two addresses claim one node name. It matches
// ErrNameConflict and ErrLeaseLost with errors.Is.
type NameConflictError struct {
	Key      string     // the lease key both claim
	NodeName string     // the shared --node-name
	Ours     netip.Addr // this node's PublicAddr
	Theirs   netip.Addr // the PublicAddr now in the lease
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
// nil when it is still ours (same address as in Owns, same identity), a
// *NameConflictError when another address wrote it under our explicit
// NodeName, and an error matching ErrLeaseLost when it belongs to another
// node altogether.
func Judge(key string, cur, mine Attrs) error {
	switch {
	case sameAddr(cur, mine) && Owns(cur, mine):
		return nil
	case mine.NodeName != "" && cur.NodeName == mine.NodeName:
		return &NameConflictError{Key: key, NodeName: mine.NodeName, Ours: mine.PublicAddr(), Theirs: cur.PublicAddr()}
	}
	return fmt.Errorf("key %s now held by %s (node %q): %w", key, cur.PublicAddr(), cur.NodeName, ErrLeaseLost)
}

// Choose applies flannel's acquire order to the current leases:
// (1) our lease (by NodeName first, then by address as in Owns) if it fits
// cfg (FitsLease), (2) for each family that is on, req.Prev (req.PrevIPv6)
// if it fits and is free, (3) else a random free block of that family (see
// PickFree). The IPv4 and IPv6 blocks are chosen independently: each must be
// free among the blocks of its family in use. Our own leases that do not fit
// are Stale, and their blocks free. Choose fails when req.Attrs does not
// carry the families cfg enables (or has a PublicIP in an IPv6-only
// network), with an *IPConflictError when another named node holds our
// address, and with an *OutOfSubnetsError when a family has no free block.
func Choose(cfg *Network, leases []Lease, req Request) (Choice, error) {
	if err := cfg.checkAttrs(req.Attrs); err != nil {
		return Choice{}, err
	}
	var c Choice
	var byName, byIP *Lease
	stale := make(map[string]bool)
	for i := range leases {
		l := &leases[i]
		a := l.Attrs
		sameIP := sameAddr(a, req.Attrs)
		named := req.Attrs.NodeName != "" && a.NodeName == req.Attrs.NodeName
		switch {
		case named:
		case sameIP && (a.NodeName == "" || a.NodeName == req.LegacyName):
		case sameIP:
			return Choice{}, &IPConflictError{PublicIP: req.Attrs.PublicAddr(), Key: l.Key(), NodeName: a.NodeName}
		default:
			continue
		}
		if !cfg.FitsLease(*l) {
			// Only a lease with our address is certainly ours: one matched
			// by name alone may be another live node's (a duplicated
			// --node-name), so it is left to expire, never deleted.
			if sameIP && !l.Reservation {
				c.Stale = append(c.Stale, *l)
				stale[l.Key()] = true
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
	// Several leases may hold one block (flannel picks its IPv6 block without
	// looking at ours, and IPv6-only leases all have the zero Subnet): the
	// blocks in use are those of every lease that stays.
	taken := make(map[netip.Prefix]bool, 2*len(leases))
	for _, l := range leases {
		if !stale[l.Key()] {
			taken[l.Subnet], taken[l.IPv6Subnet] = true, true
		}
	}
	var err error
	if cfg.EnableIPv4 {
		occ := newOccupied(taken, false, cfg.SubnetLen)
		if cfg.Fits(req.Prev) && occ.free(req.Prev) {
			c.Subnet, c.FromPrev = req.Prev, true
		} else if c.Subnet, err = cfg.ipv4Range().pick(occ); err != nil {
			return Choice{}, err
		}
	}
	if cfg.EnableIPv6 {
		occ := newOccupied(taken, true, cfg.IPv6SubnetLen)
		if cfg.FitsIPv6(req.PrevIPv6) && occ.free(req.PrevIPv6) {
			c.IPv6Subnet, c.FromPrevIPv6 = req.PrevIPv6, true
		} else if c.IPv6Subnet, err = cfg.ipv6Range().pick(occ); err != nil {
			return Choice{}, err
		}
	}
	return c, nil
}

// checkAttrs reports why a cannot be published under n: a family n enables
// that a lacks, or a PublicIP in an IPv6-only network (flannel writes
// "0.0.0.0" there, and peers would take it for the node's IPv4 address).
func (n *Network) checkAttrs(a Attrs) error {
	switch {
	case a.PublicIP.IsValid() && !a.PublicIP.Is4():
		return fmt.Errorf("PublicIP %s is not an IPv4 address", a.PublicIP)
	case a.PublicIPv6.IsValid() && (!a.PublicIPv6.Is6() || a.PublicIPv6.Is4In6()):
		return fmt.Errorf("PublicIPv6 %s is not an IPv6 address", a.PublicIPv6)
	case n.EnableIPv4 && !a.HasIPv4():
		return errors.New("the network config enables IPv4 but the lease value has no PublicIP with BackendData")
	case n.EnableIPv6 && !a.HasIPv6():
		return errors.New("the network config enables IPv6 but the lease value has no PublicIPv6 with BackendV6Data")
	case !n.EnableIPv4 && a.PublicIP.IsValid():
		return fmt.Errorf("the network config is IPv6-only but the lease value has PublicIP %s", a.PublicIP)
	}
	return nil
}
