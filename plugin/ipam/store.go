package ipam

import "net/netip"

// Store keeps reservations. It is host-local's store with every error
// returned; DiskStore is the real one and FakeStore the in-memory one for
// allocator tests. The caller holds Lock around any sequence of calls that
// must be atomic.
type Store interface {
	// Lock takes the store's exclusive lock, blocking until it is free.
	Lock() error
	// Unlock releases the lock taken by Lock.
	Unlock() error
	// Close releases the store's resources (and the lock if held).
	Close() error
	// Reserve records ip for (id, ifname). It returns false, nil when ip is
	// already reserved, and records ip as range rangeID's last reserved
	// address on success.
	Reserve(id, ifname string, ip netip.Addr, rangeID int) (bool, error)
	// ReleaseByID removes every reservation of (id, ifname); when there is
	// none it removes reservations holding only id (the old layout).
	// Releasing nothing is not an error.
	ReleaseByID(id, ifname string) error
	// Release removes the reservation of ip if it belongs to (id, ifname).
	// A missing or foreign reservation is left alone and is not an error.
	Release(ip netip.Addr, id, ifname string) error
	// GetByID returns the addresses reserved for (id, ifname) or for id alone.
	GetByID(id, ifname string) ([]netip.Addr, error)
	// LastReserved returns the last address handed out from range rangeID,
	// or the zero Addr.
	LastReserved(rangeID int) (netip.Addr, error)
	// List returns every reservation, sorted by address.
	List() ([]Reservation, error)
}

// Reservation is one reserved address. IfName is empty for files in the old
// layout that hold only a container ID.
type Reservation struct {
	IP          netip.Addr
	ContainerID string
	IfName      string
}
