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
}

// Config configures a VXLAN datapath.
type Config struct {
	Device         DeviceConfig
	Mode           Mode          // "" → proactive
	Network        netip.Prefix  // the cluster Network (on-demand: one route for it on the device)
	DirectRouting  bool          // peers on the same L2 segment get a route via their PublicIP (stale ones are found through Network)
	ResyncInterval time.Duration // periodic list-and-diff reconcile (0 → 1m)
	NetNSPath      string        // netns the handle points into ("" = current): subscriptions and /proc/sys
	Observer       Observer
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
	nl  Netlink
	cfg Config
	log *slog.Logger

	// Read by the miss path without locks.
	table    atomic.Pointer[peerTable]
	devIndex atomic.Int64
	devSnap  atomic.Pointer[Device] // the device as last ensured
	ready    atomic.Bool

	kick     chan struct{} // request a full reconcile (coalescing)
	answered chan answered // miss answers, to record (and activate, on demand)

	mu      sync.Mutex // serialises programming; guards the fields below
	dev     *Device
	lease   netip.Prefix
	desired []Peer
	// peersSet: SetPeers has been called. Until then nothing is known
	// about peers, so reconciles must not delete entries (a restarted
	// agent's Run may start before its first SetPeers).
	peersSet bool
	have     state
	active   map[netip.Prefix]bool // on-demand: peers programmed because a miss asked
	// adoptPending: have was just listed; on demand, peers found in it
	// become active at the next programLocked.
	adoptPending bool
	direct       map[netip.Addr]bool // DirectRouting decisions by PublicIP (cleared on reconcile)
	newMAC       func() (net.HardwareAddr, error)
}

// New validates cfg, applies its defaults and returns a datapath that has not
// touched the kernel yet.
func New(nl Netlink, cfg Config, log *slog.Logger) (*VXLAN, error) {
	if nl == nil {
		return nil, fmt.Errorf("%w: nil Netlink", ErrInvalidConfig)
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
		have:     newState(),
		active:   map[netip.Prefix]bool{},
		direct:   map[netip.Addr]bool{},
		newMAC:   randomMAC,
	}
	t, _ := buildTable(cfg.Mode, nil)
	v.table.Store(t)
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

func (c Config) deviceName() string { return fmt.Sprintf("flannel.%d", c.Device.VNI) }

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
	addrs, err := listRetry("addresses", func() ([]netlink.Addr, error) { return v.nl.AddrList(link, unix.AF_INET) })
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
// (declarative and idempotent). It returns errors.Join of per-peer failures;
// the other peers are programmed regardless.
func (v *VXLAN) SetPeers(peers []Peer) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.desired = slices.Clone(peers)
	v.peersSet = true
	return v.programLocked()
}

// programLocked rebuilds the peer table from v.desired, swaps it in for the
// miss path, and applies the diff between v.have and the wanted state.
func (v *VXLAN) programLocked() error {
	v.drainAnswersLocked()
	var errs []error
	valid := make([]*tablePeer, 0, len(v.desired))
	for _, p := range v.desired {
		tp, err := validatePeer(p, v.cfg.Device.LocalIP)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		tp.direct = v.isDirectLocked(tp.PublicIP)
		valid = append(valid, tp)
	}
	t, terrs := buildTable(v.cfg.Mode, valid)
	errs = append(errs, terrs...)
	v.logChanges(v.table.Swap(t), t)
	if v.dev == nil {
		v.ready.Store(false)
		return errors.Join(append(errs, fmt.Errorf("set peers: %w", ErrNoDevice))...)
	}
	if v.adoptPending {
		v.adoptLocked(v.have, t)
		v.adoptPending = false
	}
	for s := range v.active {
		if _, ok := t.bySubnet.m[s]; !ok {
			delete(v.active, s)
		}
	}
	want := buildDesired(t.peers, v.cfg.Mode, v.cfg.Network, v.active)
	reached, err := v.apply(v.have, diff(v.have, want))
	v.have = reached
	v.ready.Store(err == nil)
	if f := v.cfg.Observer.PeersProgrammed; f != nil {
		f(countProgrammed(reached, want))
	}
	return errors.Join(append(errs, err)...)
}

// countProgrammed counts wanted peers whose entries are all in s.
func countProgrammed(s state, want desired) int {
	n := 0
	for _, p := range want.peers {
		ok := true
		if p.neigh != nil {
			ok = ok && s.neigh[p.neigh.IP] == *p.neigh
		}
		if p.fdb != nil {
			_, in := s.fdb[*p.fdb]
			ok = ok && in
		}
		if p.route != nil {
			_, in := s.route[*p.route]
			ok = ok && in
		}
		if ok {
			n++
		}
	}
	return n
}

// isDirectLocked decides DirectRouting for a public IP: the underlay's route
// to it is direct (no gateway) on the underlay link. Cached per IP; the cache
// is dropped on every reconcile so underlay changes are picked up.
func (v *VXLAN) isDirectLocked(ip netip.Addr) bool {
	if !v.cfg.DirectRouting {
		return false
	}
	if d, ok := v.direct[ip]; ok {
		return d
	}
	routes, err := v.nl.RouteGet(ip.AsSlice())
	direct := err == nil && len(routes) > 0 && routes[0].Gw == nil &&
		routes[0].LinkIndex == v.cfg.Device.UnderlayIndex &&
		(routes[0].Type == 0 || routes[0].Type == unix.RTN_UNICAST)
	if err != nil {
		v.log.Warn("route lookup for direct routing failed; using VXLAN", "public_ip", ip, "err", err)
	}
	v.direct[ip] = direct
	return direct
}

// logChanges writes one line per peer added, changed or removed.
func (v *VXLAN) logChanges(old, cur *peerTable) {
	before := map[netip.Prefix]*tablePeer{}
	for _, p := range old.peers {
		before[p.Subnet] = p
	}
	for _, p := range cur.peers {
		o, ok := before[p.Subnet]
		delete(before, p.Subnet)
		switch {
		case !ok:
			v.log.Info("peer added", "peer", p.Name, "subnet", p.Subnet, "public_ip", p.PublicIP, "vtep_mac", p.mac, "direct", p.direct)
		case o.mac != p.mac || o.PublicIP != p.PublicIP || o.direct != p.direct:
			v.log.Info("peer changed", "peer", p.Name, "subnet", p.Subnet, "public_ip", p.PublicIP, "old_public_ip", o.PublicIP,
				"vtep_mac", p.mac, "old_vtep_mac", o.mac, "direct", p.direct)
		}
	}
	for _, o := range old.peers {
		if _, gone := before[o.Subnet]; gone {
			v.log.Info("peer removed", "peer", o.Name, "subnet", o.Subnet, "public_ip", o.PublicIP)
		}
	}
}
