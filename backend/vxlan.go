package backend

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
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

// Defaults applied by New. They are the only copies: the agent's config,
// the masquerade rules and weftd's flags refer to them. The lease package
// (which imports nothing of backend) has its own lease.DefaultVNI for the
// flannel network config; a test in agent keeps the two equal.
const (
	DefaultVNI            = 1             // flannel's default VNI
	DefaultPort           = 8472          // Linux's historical VXLAN port, flannel's default
	DefaultMode           = ModeProactive // flannel programs every peer up front too
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
	VNI  int // 0 → 1; the device is named "flannel.<VNI>" (IPv4) or "flannel-v6.<VNI>" (IPv6)
	Port int // UDP port; 0 → DefaultPort
	// LocalIP is the node's public IP (VXLAN local). Its family is the
	// datapath's: an IPv4 one carries the IPv4 overlay over the IPv4
	// underlay on flannel.<VNI>, an IPv6 one the IPv6 overlay over the
	// IPv6 underlay on flannel-v6.<VNI>. A dual-stack node runs one
	// datapath of each.
	LocalIP       netip.Addr
	UnderlayIndex int // underlay link index (VXLAN dev)
	UnderlayMTU   int // MTU of the underlay link (0 = read it from the link)
	MTU           int // Backend.MTU override of the underlay MTU (0 = UnderlayMTU)
	GBP, Learning bool
}

// Peer is one remote node as the datapath needs it. Subnet and PublicIP are
// of the datapath's family (for IPv6: the lease's IPv6 subnet, PublicIPv6
// and the BackendV6Data VtepMAC).
type Peer struct {
	Subnet   netip.Prefix // peer lease, e.g. 10.244.2.0/24; its .0 (::0) is the peer's device address
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
	Network        netip.Prefix  // the cluster Network of the datapath's family (on-demand: one route for it on the device)
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
//
// It is made of parts with one job each: link keeps the device, model
// decides what is wanted (pure), executor writes and records what it reached
// (the only writer of the kernel view), responder answers misses without
// the lock. VXLAN owns the one mutex that serialises SetPeers, SetAddress,
// EnsureDevice, reconciles and on-demand activations.
type VXLAN struct {
	cfg    Config
	log    *slog.Logger
	device *link // the device: ensure, repair, address

	resp  *responder    // read by the miss path without mu
	ready atomic.Bool   // see Ready
	kick  chan struct{} // request a reconcile (coalescing)

	mu    sync.Mutex // serialises programming; guards the fields below and link's
	model model
	exec  executor
	lease netip.Prefix
	// full: the next programming diffs every owner, because the kernel
	// view was just listed or reset. Otherwise it diffs the owners of the
	// changed peers and those in dirty.
	full  bool
	dirty map[netip.Prefix]bool // owners a failed write or a miss answer touched
}

// New validates cfg, applies its defaults and returns a datapath that has not
// touched the kernel yet.
func New(nl host.Host, cfg Config, log *slog.Logger) (*VXLAN, error) {
	if nl == nil {
		return nil, fmt.Errorf("%w: nil host", ErrInvalidConfig)
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := applyDefaults(&cfg); err != nil {
		return nil, err
	}
	log = log.With("device", cfg.deviceName())
	k := &kernel{nl: nl, cfg: cfg, log: log}
	l := &link{kernel: k, newMAC: randomMAC}
	v := &VXLAN{
		cfg:    cfg,
		log:    log,
		device: l,
		resp:   &responder{devIndex: &l.devIndex, is6: cfg.is6(), obs: cfg.Observer, log: log, wake: make(chan struct{}, 1)},
		kick:   make(chan struct{}, 1),
		model:  newModel(cfg),
		exec:   executor{nl: nl, cfg: cfg, log: log, devIndex: &l.devIndex, have: owned{}},
		full:   true,
		dirty:  map[netip.Prefix]bool{},
	}
	v.resp.table.Store(v.model.table)
	return v, nil
}

// applyDefaults fills zero values and rejects what cannot work.
func applyDefaults(cfg *Config) error {
	d := &cfg.Device
	if d.VNI == 0 {
		d.VNI = DefaultVNI
	}
	if d.Port == 0 {
		d.Port = DefaultPort
	}
	if cfg.Mode == "" {
		cfg.Mode = DefaultMode
	}
	if cfg.ResyncInterval == 0 {
		cfg.ResyncInterval = DefaultResyncInterval
	}
	d.LocalIP = d.LocalIP.Unmap()
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
	case cfg.Network.IsValid() && cfg.Network.Addr().Is6() != d.LocalIP.Is6():
		return fmt.Errorf("%w: Network %s is not %s like the local IP %s", ErrInvalidConfig, cfg.Network, familyName(d.LocalIP), d.LocalIP)
	case cfg.ResyncInterval < 0:
		return fmt.Errorf("%w: negative resync interval", ErrInvalidConfig)
	}
	cfg.Network = cfg.Network.Masked()
	return nil
}

// is6 reports whether the datapath is IPv6's (its LocalIP is IPv6).
func (c Config) is6() bool { return c.Device.LocalIP.Is6() }

// family is the datapath's address family: unix.AF_INET or unix.AF_INET6.
func (c Config) family() int {
	if c.is6() {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// deviceName is the device of the datapath's family.
func (c Config) deviceName() string {
	if c.is6() {
		return DeviceNameV6(c.Device.VNI)
	}
	return DeviceName(c.Device.VNI)
}

// familyName names ip's family for messages.
func familyName(ip netip.Addr) string {
	if ip.Is6() {
		return "IPv6"
	}
	return "IPv4"
}

// DeviceName is the IPv4 VXLAN device of VNI vni (0 = DefaultVNI):
// flannel.<VNI>.
func DeviceName(vni int) string {
	if vni == 0 {
		vni = DefaultVNI
	}
	return fmt.Sprintf("flannel.%d", vni)
}

// DeviceNameV6 is the IPv6 VXLAN device of VNI vni (0 = DefaultVNI):
// flannel-v6.<VNI>, as flannel names it.
func DeviceNameV6(vni int) string {
	if vni == 0 {
		vni = DefaultVNI
	}
	return fmt.Sprintf("flannel-v6.%d", vni)
}

// Ready reports whether the device is up and the last SetPeers (or reconcile)
// programmed every valid peer. Invalid peers are reported by SetPeers but do
// not make the datapath unready.
func (v *VXLAN) Ready() bool { return v.ready.Load() }

// EnsureDevice creates flannel.<VNI> (flannel-v6.<VNI> for IPv6) or reuses
// a compatible one, sets it up,
// and returns it; Device.MAC is the VtepMAC to publish. A reused device keeps
// its MAC, so peers stay valid across restarts.
func (v *VXLAN) EnsureDevice() (Device, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	d, recreated, err := v.device.ensureDeviceLocked()
	if err != nil {
		return Device{}, err
	}
	// Start from what the kernel holds, so the first SetPeers after a
	// restart rewrites nothing that is right and removes departed peers.
	flips, err := v.resyncLocked(recreated)
	if err != nil {
		return Device{}, fmt.Errorf("ensure vxlan %q: %w", d.Name, err)
	}
	if err := errors.Join(flips...); err != nil {
		v.log.Warn("peers rejected after a DirectRouting change", "err", err)
	}
	return *d, nil
}

// SetAddress puts <lease .0>/32 on the device and removes any other IPv4
// address from it; an IPv6 datapath puts <lease ::0>/128 (with nodad, so it
// can be a source at once) and removes any other global IPv6 address, never
// a link-local one. The lease must be of the datapath's family. It is
// remembered and re-applied when the device is recreated.
func (v *VXLAN) SetAddress(lease netip.Prefix) error {
	if !lease.IsValid() || lease.Addr().Is6() != v.cfg.is6() {
		return fmt.Errorf("set address: lease %v is not an %s prefix", lease, familyName(v.cfg.Device.LocalIP))
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.lease = lease.Masked()
	if v.device.dev == nil {
		return fmt.Errorf("set address %s: %w", v.lease.Addr(), ErrNoDevice)
	}
	return v.device.setAddress(v.lease)
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
	v.model.set = true
	changes := v.takeAnswersLocked()
	more, errs := v.model.update(peers)
	changes = append(changes, more...)
	n, err := v.programLocked(changes)
	v.log.Debug("peers set", "peers", v.model.table.len(), "changed", len(changes), "writes", n, "took", time.Since(start))
	return errors.Join(append(errs, err)...)
}

// HandleMiss answers one neighbour update if it is a miss on the device,
// from the published peer table (see responder.answer). Run answers every
// update itself (through a netlink handle of its own when it can open one);
// tests over the Fake may call HandleMiss directly. What it wrote is taken
// by the next programming.
func (v *VXLAN) HandleMiss(u netlink.NeighUpdate) error { return v.resp.answer(v.device.nl, u) }

// takeAnswers takes the miss answers noted so far and programs the peers
// they activated (on demand) and the owners of what they wrote.
func (v *VXLAN) takeAnswers() {
	v.mu.Lock()
	defer v.mu.Unlock()
	changes := v.takeAnswersLocked()
	if !v.model.set || (len(changes) == 0 && len(v.dirty) == 0) {
		return // before the first SetPeers, nothing is known about peers
	}
	if _, err := v.programLocked(changes); err != nil {
		v.log.Warn("programming activated peers failed", "peers", len(changes), "err", err)
	}
}

// takeAnswersLocked records what the miss answers noted so far wrote, each
// entry in its owner's bucket (which the next programming diffs: an answer
// decided from a peer that changed since is repaired there), and returns the
// activations: on demand, the answer's peer gets its regular neighbour, FDB
// and route, so later packets to its subnet no longer miss.
func (v *VXLAN) takeAnswersLocked() []peerChange {
	var changes []peerChange
	for _, a := range v.resp.take() {
		v.exec.recordAnswer(v.model.table, a.written(), v.dirty)
		if v.model.activate(a.peer) {
			p := v.model.table.get(a.peer.Subnet)
			v.log.Info("peer activated by miss", "peer", p.Name, "subnet", p.Subnet)
			changes = append(changes, peerChange{old: p, cur: p})
		}
	}
	return changes
}

// programLocked publishes the table and writes what the wanted state needs:
// the buckets of the changed peers and the dirty owners, or every bucket
// when v.full. It returns the number of writes attempted.
func (v *VXLAN) programLocked(changes []peerChange) (int, error) {
	logChanges(v.log, changes)
	v.resp.table.Store(v.model.table)
	for _, c := range changes {
		v.dirty[c.subnet()] = true
	}
	if v.device.dev == nil {
		v.ready.Store(false)
		return 0, fmt.Errorf("set peers: %w", ErrNoDevice)
	}
	d := v.model.desired()
	for _, o := range v.exec.rehome(d.t) {
		v.dirty[o] = true
	}
	var owners []netip.Prefix
	if v.full {
		for _, p := range v.model.adopt(v.exec.have) {
			v.log.Debug("peer adopted from kernel state", "peer", p.Name, "subnet", p.Subnet)
		}
		v.full = false
		owners = allOwners(v.exec.have, d)
	} else {
		owners = make([]netip.Prefix, 0, len(v.dirty))
		for o := range v.dirty {
			owners = append(owners, o)
		}
		slices.SortFunc(owners, comparePrefix)
	}
	clear(v.dirty)
	ops := diffOwners(v.exec.have, d, owners)
	failed := v.exec.apply(ops)
	v.exec.prune(owners)
	var errs []error
	for _, f := range failed {
		v.dirty[f.op.peer] = true
		if f.op.peer.IsValid() {
			errs = append(errs, fmt.Errorf("peer %s: %s: %w", f.op.peer, f.op, f.err))
		} else {
			errs = append(errs, fmt.Errorf("%s: %w", f.op, f.err))
		}
	}
	err := errors.Join(errs...)
	v.ready.Store(err == nil)
	if f := v.cfg.Observer.PeersProgrammed; f != nil {
		n := d.t.len() // with no failed write, every peer is programmed
		if err != nil {
			n = countProgrammed(v.exec.have, d)
		}
		f(n)
	}
	return len(ops), err
}

// resyncLocked replaces the kernel view with a kernel dump (an empty one for
// a device just created) and re-decides DirectRouting from a dump of the
// underlay routes; the next programming diffs every owner (and, on demand,
// adopts the peers found in the kernel). It returns the errors of peers
// rejected when their DirectRouting flipped.
func (v *VXLAN) resyncLocked(created bool) ([]error, error) {
	var dump state
	if !created {
		var err error
		if dump, err = v.exec.listState(); err != nil {
			return nil, err
		}
	}
	var flips []error
	if v.cfg.DirectRouting {
		under, err := v.exec.listUnderlay()
		if err != nil {
			return nil, err
		}
		var changes []peerChange
		changes, flips = v.model.redecideDirect(under, nil, nil)
		logChanges(v.log, changes)
	}
	v.exec.reset(dump)
	v.full = true
	return flips, nil
}
