package backend

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

// Mode selects how per-peer entries reach the kernel.
type Mode string

const (
	// ModeProactive programs every peer's neighbour, FDB and route up front;
	// misses only repair.
	ModeProactive Mode = "proactive"
	// ModeOnDemand installs one route for the Network and programs a peer
	// only when a miss asks for it.
	ModeOnDemand Mode = "on-demand"
)

// Defaults applied by New.
const (
	DefaultVNI            = 1
	DefaultPort           = 8472
	DefaultResyncInterval = time.Minute
	vxlanOverheadV4       = 50 // outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
	vxlanOverheadV6       = 70 // outer IPv6 header is 20 bytes longer
)

// RouteProtocol is the route protocol (rtm_protocol) of every route the
// datapath writes: `ip route` shows "proto 119", and `ip route show proto 119`
// lists weft's routes. It is the mark reconciles go by: see "Routes" in the
// package doc.
const RouteProtocol = 119

// DeviceConfig describes the VXLAN device.
type DeviceConfig struct {
	VNI           int        // 0 → 1; the device is named "flannel.<VNI>"
	Port          int        // UDP port; 0 → 8472
	LocalIP       netip.Addr // node public IP (VXLAN local)
	UnderlayIndex int        // underlay link index (VXLAN dev)
	UnderlayMTU   int        // MTU of the underlay link (0 = read it from the link)
	MTU           int        // Backend.MTU override of the underlay MTU (0 = UnderlayMTU)
	GBP, Learning bool
}

// Peer is one remote node as the datapath needs it.
type Peer struct {
	Subnet   netip.Prefix // peer lease, e.g. 10.244.2.0/24; its .0 is the peer's flannel.1 address
	PublicIP netip.Addr
	VtepMAC  net.HardwareAddr
	Name     string // for logs only (node name or public IP)
}

// Observer receives datapath events. All fields are optional; they are called
// synchronously and must be cheap.
type Observer struct {
	MissAnswered    func(kind string, latency time.Duration) // kind "l2" or "l3"; event received → entry written
	MissIgnored     func(kind string)                        // unknown destination
	Reconciled      func(err error)
	PeersProgrammed func(n int)
	// Subscribed is called by Run each time it has subscribed to the
	// kernel's events (kind SubscriptionLink or SubscriptionNeigh), at start
	// and after every resubscription. Events from then on are delivered,
	// and a reconcile follows (at start, the first one), so a change made
	// before is repaired too.
	Subscribed func(kind string)
}

// Config configures a VXLAN datapath.
type Config struct {
	Device         DeviceConfig
	Mode           Mode          // "" → proactive
	Network        netip.Prefix  // the cluster Network (on-demand: one route for it on the device)
	DirectRouting  bool          // peers on the same L2 segment get a route via their PublicIP (stale ones are found through Network)
	ResyncInterval time.Duration // periodic list-and-diff reconcile (0 → 1m)
	Observer       Observer
	// RAGuarded: router advertisements on the device are dropped by the agent's
	// nftables rule (masq.EnsureRADrop), so an accept_ra=0 that cannot be written
	// (read-only /proc/sys) is logged at Debug, not warned about.
	RAGuarded bool
}

// Device is the VXLAN device as ensured.
type Device struct {
	Name  string
	Index int
	MAC   net.HardwareAddr
	MTU   int
}

// VXLAN is the datapath of one node. Its methods are safe for concurrent use.
type VXLAN struct {
	nl  host.Host
	cfg Config
	log *slog.Logger

	// Read by the miss path without VXLAN.mu.
	table    *peerTable // the desired peers; see peerTable for its locking
	devIndex atomic.Int64
	devSnap  atomic.Pointer[Device] // the device as last ensured
	ready    atomic.Bool

	kick     chan struct{} // request a full reconcile (coalescing)
	answered chan answered // miss answers, to record (and activate, on demand)

	mu  sync.Mutex // serialises programming; guards the fields below
	dev *Device
	// peersSet: SetPeers has been called. Until then nothing is known
	// about peers, so reconciles must not delete entries (a restarted
	// agent's Run may start before its first SetPeers).
	peersSet bool
	lease    netip.Prefix
	gen      uint64 // SetPeers calls, for tablePeer.seen
	have     state  // the kernel view, updated in place by every write
	// full: the next programming compares everything (diff) rather than
	// the changed peers (diffPeers): have was just listed or reset, or a
	// write failed, so have and the wanted state may differ anywhere.
	full   bool
	active map[netip.Prefix]bool // on-demand: peers programmed because a miss asked
	// adoptPending: have was just listed; on demand, peers found in it
	// become active at the next programming.
	adoptPending bool
	direct       map[netip.Addr]bool // DirectRouting decisions by PublicIP (cleared on reconcile)
	newMAC       func() (net.HardwareAddr, error)
	raWarned     bool // the warning that the device accepts router advertisements was given
}

// New validates cfg, applies its defaults and returns a datapath that has not
// touched the kernel yet.
func New(nl host.Host, cfg Config, log *slog.Logger) (*VXLAN, error) {
	if nl == nil {
		return nil, fmt.Errorf("%w: nil Host", ErrInvalidConfig)
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := applyDefaults(&cfg); err != nil {
		return nil, err
	}
	v := &VXLAN{
		nl:       nl,
		cfg:      cfg,
		log:      log.With("device", cfg.deviceName()),
		kick:     make(chan struct{}, 1),
		answered: make(chan answered, 1024),
		table:    newPeerTable(cfg.Mode),
		have:     newState(0),
		full:     true,
		active:   map[netip.Prefix]bool{},
		direct:   map[netip.Addr]bool{},
		newMAC:   randomMAC,
	}
	return v, nil
}

// applyDefaults fills zero values and rejects what cannot work.
func applyDefaults(cfg *Config) error {
	d := &cfg.Device
	if d.VNI == 0 {
		d.VNI = DefaultVNI // flannel's default VNI
	}
	if d.Port == 0 {
		d.Port = DefaultPort // Linux's historical VXLAN port, flannel's default
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeProactive
	}
	if cfg.ResyncInterval == 0 {
		cfg.ResyncInterval = DefaultResyncInterval
	}
	switch {
	case d.VNI < 0 || d.VNI >= 1<<24:
		return fmt.Errorf("%w: VNI %d outside 1..16777215", ErrInvalidConfig, d.VNI)
	case d.Port < 0 || d.Port > 65535:
		return fmt.Errorf("%w: port %d", ErrInvalidConfig, d.Port)
	case !d.LocalIP.IsValid():
		return fmt.Errorf("%w: no local IP", ErrInvalidConfig)
	case d.UnderlayIndex <= 0:
		return fmt.Errorf("%w: no underlay link index", ErrInvalidConfig)
	case d.MTU < 0 || d.UnderlayMTU < 0:
		return fmt.Errorf("%w: negative MTU", ErrInvalidConfig)
	case cfg.Mode != ModeProactive && cfg.Mode != ModeOnDemand:
		return fmt.Errorf("%w: unknown mode %q", ErrInvalidConfig, cfg.Mode)
	case cfg.Mode == ModeOnDemand && !cfg.Network.IsValid():
		return fmt.Errorf("%w: on-demand mode needs the Network", ErrInvalidConfig)
	case cfg.Network.IsValid() && !cfg.Network.Addr().Is4():
		return fmt.Errorf("%w: Network %s is not IPv4", ErrInvalidConfig, cfg.Network)
	case cfg.ResyncInterval < 0:
		return fmt.Errorf("%w: negative resync interval", ErrInvalidConfig)
	}
	d.LocalIP = d.LocalIP.Unmap()
	cfg.Network = cfg.Network.Masked()
	return nil
}

func (c Config) deviceName() string { return DeviceName(c.Device.VNI) }

// DeviceName is the VXLAN device of VNI vni (0 = DefaultVNI): flannel.<VNI>.
func DeviceName(vni int) string {
	if vni == 0 {
		vni = DefaultVNI
	}
	return fmt.Sprintf("flannel.%d", vni)
}

// Ready reports whether the device is up and the last SetPeers (or reconcile)
// programmed every valid peer. Invalid peers are reported by SetPeers but do
// not make the datapath unready.
func (v *VXLAN) Ready() bool { return v.ready.Load() }

// SetAddress puts <lease .0>/32 on the device and removes any other IPv4
// address from it. The lease is remembered and re-applied when the device is
// recreated.
func (v *VXLAN) SetAddress(lease netip.Prefix) error {
	if !lease.IsValid() || !lease.Addr().Is4() {
		return fmt.Errorf("set address: lease %v is not an IPv4 prefix", lease)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.lease = lease.Masked()
	if v.dev == nil {
		return fmt.Errorf("set address %s: %w", v.lease.Addr(), ErrNoDevice)
	}
	return v.setAddressLocked()
}

func (v *VXLAN) setAddressLocked() error {
	link := v.linkRef()
	want := netip.PrefixFrom(v.lease.Addr(), 32)
	addr := &netlink.Addr{IPNet: prefixIPNet(want)}
	if err := v.nl.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("set address %s on %s: %w", want, v.dev.Name, err)
	}
	addrs, err := v.nl.AddrList(link, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("set address %s on %s: %w", want, v.dev.Name, err)
	}
	var errs []error
	for _, a := range addrs {
		p, ok := ipNetPrefix(a.IPNet)
		if !ok || p == want {
			continue
		}
		v.log.Info("removing stale address", "addr", p)
		if err := v.nl.AddrDel(link, &a); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("remove stale address %s from %s: %w", p, v.dev.Name, err))
		}
	}
	return errors.Join(errs...)
}

// SetPeers makes the kernel hold exactly the entries the given peers need
// (declarative and idempotent). Only the peers added, changed or removed since
// the previous call are diffed and written, so one lease event costs O(1)
// kernel work whatever the cluster size (plus an O(N) comparison of the list
// without allocations). It returns errors.Join of per-peer failures; the
// other peers are programmed regardless.
func (v *VXLAN) SetPeers(peers []Peer) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	start := time.Now()
	v.peersSet = true
	changes := v.drainAnswersLocked(nil)
	changes, errs := v.updatePeersLocked(peers, changes)
	ops, err := v.programLocked(changes)
	v.log.Debug("peers set", "peers", v.table.len(), "changed", len(changes), "writes", ops, "took", time.Since(start))
	return errors.Join(append(errs, err)...)
}
