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
// same NodeName, or the same PublicIP and no other NodeName.
func Owns(l, a Attrs) bool {
	if a.NodeName != "" && l.NodeName == a.NodeName {
		return true
	}
	return l.PublicIP == a.PublicIP && (l.NodeName == "" || l.NodeName == a.NodeName)
}

// Choose applies the acquire order of FORMATS.md to the current leases:
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
		if a.PublicIP == req.Attrs.PublicIP && a.NodeName != "" && a.NodeName != req.Attrs.NodeName {
			return Choice{}, &IPConflictError{PublicIP: a.PublicIP, Key: l.Key(), NodeName: a.NodeName}
		}
		if !Owns(a, req.Attrs) {
			continue
		}
		if !cfg.FitsLease(*l) {
			if !l.Reservation {
				c.Stale = append(c.Stale, *l)
			}
			continue
		}
		if req.Attrs.NodeName != "" && a.NodeName == req.Attrs.NodeName {
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
