package lease

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"time"
)

// Lease is one node's claim on a subnet of the overlay Network, as stored
// under <prefix>/subnets/<a.b.c.d>-<len>[&<ipv6>-<len6>].
type Lease struct {
	// Subnet is the IPv4 block leased to the node (for example
	// 10.244.1.0/24); the zero Prefix in an IPv6-only lease (key
	// "0.0.0.0-0&<ipv6>-<len6>"). Several leases may have the same invalid
	// Subnet: Key() is what identifies a lease.
	Subnet netip.Prefix
	// IPv6Subnet is the IPv6 block of a dual-stack or IPv6-only lease; the
	// zero Prefix when absent.
	IPv6Subnet netip.Prefix
	// Attrs is the JSON value stored at the key.
	Attrs Attrs
	// Reservation is true when the key carries no etcd lease (kv.Lease == 0):
	// it never expires and weft never attaches a lease to it.
	Reservation bool
	// LeaseID is the store's lease handle (the etcd lease ID); 0 for a reservation.
	LeaseID int64
	// Expiration is when the lease expires if not renewed; zero when unknown or never.
	// Stores fill it for our own lease only (no per-peer TTL look-ups).
	Expiration time.Time
}

// Key returns the lease's key below <prefix>/subnets/.
func (l Lease) Key() string { return FormatKey(l.Subnet, l.IPv6Subnet) }

// Attrs is the lease value: exactly flannel's LeaseAttrs fields, in flannel's
// order, followed by weft's own optional fields (ignored by flannel).
type Attrs struct {
	PublicIP      netip.Addr
	PublicIPv6    netip.Addr // invalid (zero) is written as null
	BackendType   string
	BackendData   *VXLANData // nil is omitted
	BackendV6Data *VXLANData // nil is omitted
	// NodeName is weft's stable node identity; it lets a node keep its subnet
	// across a change of PublicIP. Omitted when empty.
	NodeName string
}

// VXLANData is the BackendData of a vxlan lease: {"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}.
type VXLANData struct {
	VNI     int
	VtepMAC net.HardwareAddr
}

// EventType says what happened to a lease.
type EventType int

const (
	// Added: a lease appeared (or was in the initial snapshot).
	Added EventType = iota + 1
	// Removed: a lease was deleted or expired.
	Removed
	// Changed: a lease's value changed (for example a new VtepMAC or PublicIP).
	Changed
)

func (t EventType) String() string {
	switch t {
	case Added:
		return "added"
	case Removed:
		return "removed"
	case Changed:
		return "changed"
	}
	return "unknown"
}

// Event is one change to the set of leases.
type Event struct {
	Type  EventType
	Lease Lease
}

// Request asks a Store for a lease.
type Request struct {
	// Attrs is the value to publish. It must carry each family the config
	// enables (see Attrs.HasIPv4, HasIPv6), and no PublicIP in an IPv6-only
	// network (flannel writes "0.0.0.0" there). NodeName, or else
	// PublicAddr (PublicIP, or PublicIPv6 in an IPv6-only network),
	// identifies our old lease.
	Attrs Attrs
	// Prev is the IPv4 subnet recorded in our previous subnet.env (zero if
	// none): preferred when free and compatible with the config.
	Prev netip.Prefix
	// PrevIPv6 is the same for the IPv6 subnet, chosen independently of Prev.
	PrevIPv6 netip.Prefix
	// TTL is the lease lifetime (0 = DefaultTTL).
	TTL time.Duration
	// LegacyName is the name earlier weft releases wrote by default (the
	// hostname) when Attrs.NodeName is not set explicitly: a lease with our
	// PublicIP under that name is ours too, not another node's.
	LegacyName string
}

// DefaultTTL is flannel's default subnet lease TTL (--subnet-lease-ttl).
const DefaultTTL = 24 * time.Hour

// DefaultVNI is flannel's default Backend.VNI, filled in by ParseNetwork.
// backend.DefaultVNI, the datapath's default, is the same number (a test in
// agent keeps them equal: backend and lease import nothing of each other).
const DefaultVNI = 1

// DefaultPrefix is flannel's default etcd prefix (--etcd-prefix).
const DefaultPrefix = "/coreos.com/network"

// Errors that callers branch on.
var (
	// ErrNoConfig: <prefix>/config does not exist yet.
	ErrNoConfig = errors.New("network config not found")
	// ErrLeaseLost: our key was taken by someone else and could not be re-created.
	ErrLeaseLost = errors.New("lease lost")
	// ErrOutOfSubnets: every block between SubnetMin and SubnetMax is taken (see OutOfSubnetsError).
	ErrOutOfSubnets = errors.New("out of subnets")
)

// OutOfSubnetsError reports that every block of one address family is
// taken. It matches ErrOutOfSubnets with errors.Is.
type OutOfSubnetsError struct {
	// IPv6 is true when the IPv6 blocks ran out, false for IPv4.
	IPv6 bool
	// Used and Total count the blocks between SubnetMin and SubnetMax (or
	// IPv6SubnetMin and IPv6SubnetMax); Total is capped at math.MaxInt.
	Used, Total int
}

func (e *OutOfSubnetsError) Error() string {
	fam := "IPv4"
	if e.IPv6 {
		fam = "IPv6"
	}
	return "out of subnets: " + itoa(e.Used) + " of " + itoa(e.Total) + " " + fam + " subnets in use"
}

// Is makes errors.Is(err, ErrOutOfSubnets) true.
func (e *OutOfSubnetsError) Is(target error) bool { return target == ErrOutOfSubnets }

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// Store is where leases live. Implemented by etcdstore.Store and MemStore.
// All methods are safe for concurrent use; none exposes store-specific types.
type Store interface {
	// NetworkConfig reads, defaults and validates <prefix>/config.
	// A missing key returns an error matching ErrNoConfig.
	NetworkConfig(ctx context.Context) (*Network, error)
	// Acquire claims a subnet of cfg, the config the caller read with
	// NetworkConfig (and built its device from): our existing lease (same
	// PublicIP or NodeName), else req.Prev if free, else a random free block.
	// It may update the value of our existing lease (new VtepMAC, PublicIP)
	// with a compare-and-swap. A nil cfg fails with ErrNoConfig.
	Acquire(ctx context.Context, cfg *Network, req Request) (Lease, error)
	// KeepAlive keeps l alive until ctx ends (returns nil then). When the etcd
	// lease is lost it re-creates the same key first; it returns ErrLeaseLost
	// only when the key now belongs to someone else. A reservation needs no renewal.
	KeepAlive(ctx context.Context, l Lease) error
	// List returns every valid lease. Corrupt values and other backends are skipped.
	List(ctx context.Context) ([]Lease, error)
	// Watch sends a snapshot first (one batch of Added events, possibly empty),
	// then batches of deltas. It re-lists internally after compaction or errors
	// and emits only the differences. The channel closes when ctx ends.
	Watch(ctx context.Context) (<-chan []Event, error)
}
