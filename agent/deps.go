package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/masq"
	"github.com/weftnet/weft/backend/underlay"
	"github.com/weftnet/weft/lease"
)

// Leases is what the agent needs of the lease store: etcdstore.Store in
// weftd, lease.MemStore in the table test.
type Leases interface {
	// NetworkConfig reads <prefix>/config (ErrNoConfig while it is missing).
	NetworkConfig(ctx context.Context) (*lease.Network, error)
	// Acquire claims a subnet of cfg, the config the device is built from.
	Acquire(ctx context.Context, cfg *lease.Network, req lease.Request) (lease.Lease, error)
	// KeepAlive renews l until ctx ends.
	KeepAlive(ctx context.Context, l lease.Lease) error
	// Watch sends a snapshot of the leases, then batches of changes.
	Watch(ctx context.Context) (<-chan []lease.Event, error)
}

// Datapath is the VXLAN datapath of one address family as the agent drives
// it (*backend.VXLAN); a dual-stack node has two.
type Datapath interface {
	// EnsureDevice creates or repairs the VXLAN device and describes it.
	EnsureDevice() (backend.Device, error)
	// SetAddress puts the lease's first address on the device (/32, or /128
	// on the IPv6 device).
	SetAddress(lease netip.Prefix) error
	// SetPeers programs the desired peer set.
	SetPeers(peers []backend.Peer) error
	// Run answers misses and reconciles until ctx ends.
	Run(ctx context.Context) error
	// Ready reports whether the device is up and every valid peer programmed.
	Ready() bool
}

// Masq is the nftables work of the node: masquerade (--ip-masq), the
// FORWARD accepts (--iptables-forward-rules), the diagnosis of chains that
// drop pod traffic and the router-advertisement drop on the VXLAN device.
// Nftables is the production one.
type Masq interface {
	Ensure(r masq.Rules) error
	// Delete removes the masquerade rules (a run with --ip-masq left them).
	Delete() error
	// EnsureForward accepts every given network (one per enabled family).
	EnsureForward(networks []netip.Prefix) error
	// DeleteForward removes the FORWARD accepts.
	DeleteForward() error
	// ForwardBlockers lists the chains weft cannot override that drop
	// traffic of network.
	ForwardBlockers(network netip.Prefix) ([]masq.Blocker, error)
	EnsureRADrop(devices []string) error
}

// Deps are the agent's collaborators.
type Deps struct {
	Leases Leases
	// NewDatapath builds a datapath once the network config is known
	// (the device's VNI, port and MTU come from it): one per enabled
	// address family, told apart by the family of Config.Device.LocalIP.
	NewDatapath func(backend.Config) (Datapath, error)
	Masq        Masq
	// Underlay is the interface and addresses chosen for inter-node traffic
	// (underlay.Find with Config.UnderlayOptions).
	Underlay underlay.Underlay
	Log      *slog.Logger // nil: discard
	Metrics  *Metrics     // nil: a fresh registry
}

func (d *Deps) check() error {
	var errs []error
	if d.Leases == nil {
		errs = append(errs, errors.New("no lease store"))
	}
	if d.NewDatapath == nil {
		errs = append(errs, errors.New("no datapath factory"))
	}
	if d.Masq == nil {
		errs = append(errs, errors.New("no nftables (Masq)"))
	}
	if (!d.Underlay.IP.IsValid() && !d.Underlay.IPv6.IsValid()) || d.Underlay.Index <= 0 {
		errs = append(errs, errors.New("no underlay interface"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("agent dependencies: %w", err)
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Metrics == nil {
		d.Metrics = NewMetrics()
	}
	return nil
}

// Nftables is the Masq of weftd: backend/masq in one network namespace.
type Nftables struct {
	ns  masq.Host
	log *slog.Logger
}

// NewNftables works in the network namespace of h (a *host.NS), logging the
// rules it changes to log.
func NewNftables(h masq.Host, log *slog.Logger) *Nftables {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Nftables{ns: h, log: log}
}

var _ Masq = (*Nftables)(nil)

// Ensure is masq.Ensure.
func (n *Nftables) Ensure(r masq.Rules) error { return masq.Ensure(n.ns, r, n.log) }

// Delete is masq.Delete.
func (n *Nftables) Delete() error { return masq.Delete(n.ns) }

// EnsureForward is masq.EnsureForward.
func (n *Nftables) EnsureForward(networks []netip.Prefix) error {
	return masq.EnsureForward(n.ns, networks, n.log)
}

// DeleteForward is masq.DeleteForward.
func (n *Nftables) DeleteForward() error { return masq.DeleteForward(n.ns) }

// ForwardBlockers is masq.ForwardBlockers.
func (n *Nftables) ForwardBlockers(network netip.Prefix) ([]masq.Blocker, error) {
	return masq.ForwardBlockers(n.ns, network)
}

// EnsureRADrop is masq.EnsureRADrop.
func (n *Nftables) EnsureRADrop(devices []string) error {
	return masq.EnsureRADrop(n.ns, devices, n.log)
}
