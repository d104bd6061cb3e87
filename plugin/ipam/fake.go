package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
)

// FakeStore is an in-memory Store for allocator tests. It behaves like
// DiskStore: Reserve refuses a taken address, and a call made without the lock
// (or a second Lock) fails, which catches callers that forget to lock.
type FakeStore struct {
	mu       sync.Mutex
	locked   bool
	last     map[int]netip.Addr
	reserved map[netip.Addr]Reservation
}

var _ Store = (*FakeStore)(nil)

// errNotLocked is returned by FakeStore methods called without the lock.
var errNotLocked = errors.New("fake store used without Lock")

// NewFakeStore returns an empty store holding the given reservations.
func NewFakeStore(rs ...Reservation) *FakeStore {
	s := &FakeStore{reserved: map[netip.Addr]Reservation{}, last: map[int]netip.Addr{}}
	for _, r := range rs {
		s.reserved[r.IP] = r
	}
	return s
}

// Lock implements Store.
func (s *FakeStore) Lock() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locked {
		return errors.New("fake store locked twice")
	}
	s.locked = true
	return nil
}

// Unlock implements Store.
func (s *FakeStore) Unlock() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.locked {
		return errNotLocked
	}
	s.locked = false
	return nil
}

// Close implements Store.
func (s *FakeStore) Close() error { return nil }

func (s *FakeStore) check() error {
	if !s.locked {
		return errNotLocked
	}
	return nil
}

// Reserve implements Store.
func (s *FakeStore) Reserve(id, ifname string, ip netip.Addr, rangeID int) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return false, err
	}
	if _, ok := s.reserved[ip]; ok {
		return false, nil
	}
	s.reserved[ip] = Reservation{IP: ip, ContainerID: id, IfName: ifname}
	s.last[rangeID] = ip
	return true, nil
}

// ReleaseByID implements Store.
func (s *FakeStore) ReleaseByID(id, ifname string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return err
	}
	n := 0
	for ip, r := range s.reserved {
		if r.ContainerID == id && r.IfName == ifname {
			delete(s.reserved, ip)
			n++
		}
	}
	if n == 0 {
		for ip, r := range s.reserved {
			if r.ContainerID == id && r.IfName == "" {
				delete(s.reserved, ip)
			}
		}
	}
	return nil
}

// Release implements Store.
func (s *FakeStore) Release(ip netip.Addr, id, ifname string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return err
	}
	if r, ok := s.reserved[ip]; ok && r.ContainerID == id && r.IfName == ifname {
		delete(s.reserved, ip)
	}
	return nil
}

// GetByID implements Store.
func (s *FakeStore) GetByID(id, ifname string) ([]netip.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return nil, err
	}
	var out []netip.Addr
	for ip, r := range s.reserved {
		if r.ContainerID == id && (r.IfName == ifname || r.IfName == "") {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

// LastReserved implements Store.
func (s *FakeStore) LastReserved(rangeID int) (netip.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return netip.Addr{}, err
	}
	return s.last[rangeID], nil
}

// List implements Store.
func (s *FakeStore) List() ([]Reservation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(); err != nil {
		return nil, err
	}
	out := make([]Reservation, 0, len(s.reserved))
	for _, r := range s.reserved {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Reservation) int { return a.IP.Compare(b.IP) })
	return out, nil
}
