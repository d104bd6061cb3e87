package ipam

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

const (
	// lastReservedPrefix + the range ID is host-local's cursor file of a range.
	lastReservedPrefix = "last_reserved_ip."
	// lockFile is the file host-local flocks inside the network directory.
	lockFile = "lock"
	// lineBreak separates container ID and ifname, exactly as host-local writes it.
	lineBreak = "\r\n"
)

// DiskStore is the Store on disk, in host-local's layout (see the package doc).
type DiskStore struct {
	dir  string
	lock *os.File
}

var _ Store = (*DiskStore)(nil)

// DefaultDataDir is host-local's default state directory.
const DefaultDataDir = "/var/lib/cni/networks"

// NetworkDir is the directory holding network's reservations under dataDir.
func NetworkDir(dataDir, network string) string { return filepath.Join(dataDir, network) }

// OpenDiskStore opens (creating if needed, mode 0755) the directory of
// network under dataDir and its lock file. network must be a single path
// element.
func OpenDiskStore(dataDir, network string) (*DiskStore, error) {
	if network == "" || network == "." || network == ".." || strings.ContainsRune(network, '/') {
		return nil, fmt.Errorf("network name %q is not a single path element", network)
	}
	dir := NetworkDir(dataDir, network)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create ipam directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open ipam lock: %w", err)
	}
	return &DiskStore{dir: dir, lock: f}, nil
}

// Dir is the network directory this store works in.
func (s *DiskStore) Dir() string { return s.dir }

// Lock implements Store with flock(LOCK_EX) on the lock file.
func (s *DiskStore) Lock() error { return flock(s.lock, syscall.LOCK_EX) }

// Unlock implements Store.
func (s *DiskStore) Unlock() error { return flock(s.lock, syscall.LOCK_UN) }

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			if err != nil {
				return fmt.Errorf("flock %s: %w", f.Name(), err)
			}
			return nil
		}
	}
}

// Close implements Store; closing the file drops a held lock.
func (s *DiskStore) Close() error { return s.lock.Close() }

// Reserve implements Store: the address file is created with O_EXCL, so an
// existing reservation (ours or host-local's) is never overwritten.
func (s *DiskStore) Reserve(id, ifname string, ip netip.Addr, rangeID int) (bool, error) {
	name := filepath.Join(s.dir, ip.String())
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reserve %s: %w", ip, err)
	}
	_, err = f.WriteString(strings.TrimSpace(id) + lineBreak + ifname)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.writeLastReserved(ip, rangeID)
	}
	if err != nil {
		_ = os.Remove(name)
		return false, fmt.Errorf("reserve %s: %w", ip, err)
	}
	return true, nil
}

// writeLastReserved records ip in last_reserved_ip.<rangeID>, as host-local does (the
// address, no newline), but overwrites the file in place and then cuts it to
// length instead of truncating it to zero first: on ext4, a file truncated
// to zero and written again is flushed when it is closed (auto_da_alloc),
// which makes every ADD wait for the disk; written in place it does not
// (`make bench`'s CNI figure). A crash between the write and the cut can leave a
// longer address's tail behind; the file is only a hint (LastReserved treats
// anything unparsable as none), and host-local's own write is not atomic
// either.
func (s *DiskStore) writeLastReserved(ip netip.Addr, rangeID int) error {
	f, err := os.OpenFile(s.lastReservedPath(rangeID), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	b := []byte(ip.String())
	_, err = f.WriteAt(b, 0)
	if err == nil {
		err = f.Truncate(int64(len(b)))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReleaseByID implements Store.
func (s *DiskStore) ReleaseByID(id, ifname string) error {
	rs, err := s.List()
	if err != nil {
		return err
	}
	var errs []error
	found := false
	for _, old := range []bool{false, true} {
		for _, r := range rs {
			if r.ContainerID != id || (old && r.IfName != "") || (!old && r.IfName != ifname) {
				continue
			}
			found = true
			if err := os.Remove(filepath.Join(s.dir, r.IP.String())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("release %s: %w", r.IP, err))
			}
		}
		if found {
			break
		}
	}
	return errors.Join(errs...)
}

// Release implements Store.
func (s *DiskStore) Release(ip netip.Addr, id, ifname string) error {
	name := filepath.Join(s.dir, ip.String())
	b, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read reservation %s: %w", ip, err)
	}
	if gotID, gotIf := ParseReservation(b); gotID != id || gotIf != ifname {
		return nil
	}
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("release %s: %w", ip, err)
	}
	return nil
}

// GetByID implements Store.
func (s *DiskStore) GetByID(id, ifname string) ([]netip.Addr, error) {
	rs, err := s.List()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, r := range rs {
		if r.ContainerID == id && (r.IfName == ifname || r.IfName == "") {
			out = append(out, r.IP)
		}
	}
	return out, nil
}

// LastReserved implements Store. A missing or unparsable file means none.
func (s *DiskStore) LastReserved(rangeID int) (netip.Addr, error) {
	b, err := os.ReadFile(s.lastReservedPath(rangeID))
	if errors.Is(err, fs.ErrNotExist) {
		return netip.Addr{}, nil
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("read last reserved address: %w", err)
	}
	ip, err := netip.ParseAddr(strings.TrimSpace(string(b)))
	if err != nil {
		return netip.Addr{}, nil
	}
	return ip, nil
}

// lastReservedPath is range rangeID's cursor file.
func (s *DiskStore) lastReservedPath(rangeID int) string {
	return filepath.Join(s.dir, lastReservedPrefix+strconv.Itoa(rangeID))
}

// List implements Store: every file named by an address is a reservation.
func (s *DiskStore) List() ([]Reservation, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list ipam directory: %w", err)
	}
	var out []Reservation
	for _, e := range entries {
		ip, err := netip.ParseAddr(e.Name())
		if err != nil || !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read reservation %s: %w", e.Name(), err)
		}
		id, ifname := ParseReservation(b)
		out = append(out, Reservation{IP: ip, ContainerID: id, IfName: ifname})
	}
	slices.SortFunc(out, func(a, b Reservation) int { return a.IP.Compare(b.IP) })
	return out, nil
}

// ParseReservation splits a reservation file into container ID and ifname.
// It accepts "\r\n" (host-local) and "\n" separators, and a lone container ID.
func ParseReservation(b []byte) (id, ifname string) {
	s := strings.TrimSpace(string(b))
	id, ifname, _ = strings.Cut(s, "\n")
	return strings.TrimSpace(id), strings.TrimSpace(ifname)
}
