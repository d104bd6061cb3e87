package ipam

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrExhausted is matched (errors.Is) when every address of the range is reserved.
var ErrExhausted = errors.New("no IP addresses available")

// Allocator hands out addresses of one Range from a Store.
type Allocator struct {
	store   Store
	rng     Range
	rangeID int
}

// NewAllocator returns an allocator over store for r, which must have been
// canonicalized. rangeID is host-local's index of the range (set) in
// ipam.ranges: it names the range's cursor file, last_reserved_ip.<rangeID>.
// Allocators of different ranges share one store (one directory, one lock).
func NewAllocator(store Store, r Range, rangeID int) *Allocator {
	return &Allocator{store: store, rng: r, rangeID: rangeID}
}

// Get reserves an address for (id, ifname) under the store lock: the first
// free one after the last reserved address, wrapping round, skipping the
// gateway. Usually that is one O_EXCL create.
//
// Unlike host-local, Get does not first scan every reservation for one
// already held by (id, ifname): that scan reads every reservation file on
// every ADD, a cost that grows with the pods on the node. A repeated ADD is
// caught by the caller instead (the CNI plugin finds the attachment's veth
// already there), and Held answers the question when it is needed.
func (a *Allocator) Get(id, ifname string) (ip netip.Addr, err error) {
	if err := a.store.Lock(); err != nil {
		return netip.Addr{}, fmt.Errorf("lock ipam store: %w", err)
	}
	defer func() {
		if uerr := a.store.Unlock(); uerr != nil && err == nil {
			ip, err = netip.Addr{}, fmt.Errorf("unlock ipam store: %w", uerr)
		}
	}()
	last, err := a.store.LastReserved(a.rangeID)
	if err != nil {
		return netip.Addr{}, err
	}
	start := a.rng.RangeStart
	if a.rng.Contains(last) {
		start = a.rng.next(last)
	}
	cur := start
	for {
		if cur != a.rng.Gateway {
			ok, err := a.store.Reserve(id, ifname, cur, a.rangeID)
			if err != nil {
				return netip.Addr{}, err
			}
			if ok {
				return cur, nil
			}
		}
		if cur = a.rng.next(cur); cur == start {
			return netip.Addr{}, fmt.Errorf("%w in range %s", ErrExhausted, a.rng)
		}
	}
}

// Release frees every address of (id, ifname) under the store lock, in
// every range of the store, not only this allocator's.
func (a *Allocator) Release(id, ifname string) (err error) {
	if err := a.store.Lock(); err != nil {
		return fmt.Errorf("lock ipam store: %w", err)
	}
	defer func() {
		if uerr := a.store.Unlock(); uerr != nil && err == nil {
			err = fmt.Errorf("unlock ipam store: %w", uerr)
		}
	}()
	return a.store.ReleaseByID(id, ifname)
}

// ReleaseIP frees ip if it is reserved for (id, ifname): the undo of one Get,
// which leaves any other address of the attachment alone.
func (a *Allocator) ReleaseIP(id, ifname string, ip netip.Addr) (err error) {
	if err := a.store.Lock(); err != nil {
		return fmt.Errorf("lock ipam store: %w", err)
	}
	defer func() {
		if uerr := a.store.Unlock(); uerr != nil && err == nil {
			err = fmt.Errorf("unlock ipam store: %w", uerr)
		}
	}()
	return a.store.Release(ip, id, ifname)
}

// Held returns the addresses of the range reserved for (id, ifname).
func (a *Allocator) Held(id, ifname string) (ips []netip.Addr, err error) {
	if err := a.store.Lock(); err != nil {
		return nil, fmt.Errorf("lock ipam store: %w", err)
	}
	defer func() {
		if uerr := a.store.Unlock(); uerr != nil && err == nil {
			ips, err = nil, fmt.Errorf("unlock ipam store: %w", uerr)
		}
	}()
	all, err := a.store.GetByID(id, ifname)
	for _, ip := range all {
		if !a.rng.RangeStart.IsValid() || a.rng.Contains(ip) {
			ips = append(ips, ip)
		}
	}
	return ips, err
}
