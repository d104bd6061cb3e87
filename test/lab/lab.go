package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lease"
)

// Fixed addresses on the underlay switch (198.18.0.0/24); node N is 198.18.0.N.
var (
	Underlay  = netip.MustParsePrefix("198.18.0.0/24")
	EtcdIP    = netip.MustParseAddr("198.18.0.200")
	OutsideIP = netip.MustParseAddr("198.18.0.250")
)

// maxNodes keeps node addresses below EtcdIP.
const maxNodes = 199

// Options describe a lab. Zero values get the defaults named on each field.
type Options struct {
	Nodes   int    // nodes started by New (default 0: add them with AddNode)
	BinDir  string // directory with the built weftd, weft-etcd and weft (required)
	CNIPath string // directory with weft and portmap (default: a temp dir, portmap built into it)
	RepoDir string // weft checkout holding manifests/ (default: found from the working directory)
	Etcd    string // EtcdEmbedded (default) or EtcdDebian

	// Defaults of every node's agent; AddNode can override them.
	NeighMode string   // --neigh-mode of every agent; empty: weftd's default
	IPMasq    bool     // --ip-masq
	AgentArgs []string // appended to `weftd run`

	Network     string // IPv4 pod network (default 10.244.0.0/16)
	IPv6Network string // IPv6 pod network (default DefaultIPv6Network, fc00::/48)

	// Overlay is the pod network's family, written into the network config
	// (default IPv4); Underlay is the family of every eth0 on the switch
	// (default: Overlay's). They may differ, e.g. to start a dual-stack
	// network on an IPv4-only underlay.
	Overlay  Family
	Underlay Family
	Prefix   string // etcd prefix (default /coreos.com/network)

	// Keep leaves processes running if the lab's process exits (no Pdeathsig);
	// see Detach.
	Keep bool
	Log  *slog.Logger // default: discard
}

// Lab is a running topology. Its methods are safe for concurrent use.
type Lab struct {
	opts   Options
	log    *slog.Logger
	prefix string // netns name prefix, e.g. wl1a2b
	dir    string // temp dir: logs, etcd data, per-node files, CNI cache

	sw, etcdNS, outNS *NetNS
	cli               *clientv3.Client
	cni               *cniEnv

	mu      sync.Mutex
	etcd    *proc
	nodes   []*Node
	nodeSeq int // last node number handed out
	pods    []*Pod
	nsList  []*NetNS // every namespace created, in creation order
	closed  bool
	errs    error
}

// New builds the switch, etcd and outside namespaces, starts etcd, writes the
// network config and starts opts.Nodes nodes (agents ready). On error
// everything created so far is removed.
func New(ctx context.Context, opts Options) (l *Lab, err error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	l = &Lab{opts: opts, log: opts.Log, prefix: FreePrefix("wl")}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
			l = nil
		}
	}()
	if l.dir, err = os.MkdirTemp("", "weft-lab-"+l.prefix+"-"); err != nil {
		return l, fmt.Errorf("lab dir: %w", err)
	}
	start := time.Now()
	if err := l.buildSwitch(ctx); err != nil {
		return l, err
	}
	if l.cni, err = newCNIEnv(ctx, opts, l.dir); err != nil {
		return l, err
	}
	if l.cli, err = l.newEtcdClient(); err != nil {
		return l, err
	}
	if err := l.StartEtcd(ctx); err != nil {
		return l, err
	}
	if err := l.writeNetworkConfig(ctx); err != nil {
		return l, err
	}
	for range opts.Nodes {
		if _, err := l.AddNode(ctx, l.NodeDefaults()); err != nil {
			return l, err
		}
	}
	l.log.Info("lab ready", "prefix", l.prefix, "dir", l.dir, "nodes", opts.Nodes, "etcd", opts.Etcd, "took", time.Since(start).Round(time.Millisecond))
	return l, nil
}

// FreePrefix picks "<tag><4 hex>" (tag "wl" for labs) not used by another
// run's switch namespace "<prefix>-sw". (After 100 tries it gives up and lets
// `ip netns add` report the clash.)
func FreePrefix(tag string) string {
	var p string
	for range 100 {
		var rnd [2]byte
		_, _ = rand.Read(rnd[:])
		p = tag + hex.EncodeToString(rnd[:])
		if _, err := os.Stat(filepath.Join("/run/netns", p+"-sw")); os.IsNotExist(err) {
			break
		}
	}
	return p
}

func (o *Options) defaults() error {
	if o.BinDir == "" {
		return errors.New("lab: Options.BinDir is required")
	}
	abs, err := filepath.Abs(o.BinDir)
	if err != nil {
		return fmt.Errorf("lab: bin dir: %w", err)
	}
	o.BinDir = abs
	for _, b := range []string{"weftd", "weft"} {
		if _, err := os.Stat(filepath.Join(abs, b)); err != nil {
			return fmt.Errorf("lab: built %s missing (run make build): %w", b, err)
		}
	}
	if o.Nodes < 0 || o.Nodes > maxNodes {
		return fmt.Errorf("lab: %d nodes: want 0..%d", o.Nodes, maxNodes)
	}
	switch o.Etcd {
	case "":
		o.Etcd = EtcdEmbedded
	case EtcdEmbedded:
	case EtcdDebian:
		if !HaveDebianEtcd() {
			return fmt.Errorf("lab: etcd %q: %s not installed (apt-get install etcd-server)", o.Etcd, DebianEtcdPath)
		}
	default:
		return fmt.Errorf("lab: etcd %q: want %q or %q", o.Etcd, EtcdEmbedded, EtcdDebian)
	}
	if o.Network == "" {
		o.Network = "10.244.0.0/16"
	}
	if o.IPv6Network == "" {
		o.IPv6Network = DefaultIPv6Network
	}
	if o.Overlay == "" {
		o.Overlay = IPv4
	}
	if o.Underlay == "" {
		o.Underlay = o.Overlay
	}
	if !o.Overlay.valid() || !o.Underlay.valid() {
		return fmt.Errorf("lab: families overlay %q underlay %q: want %q, %q or %q", o.Overlay, o.Underlay, IPv4, Dual, IPv6)
	}
	if o.Prefix == "" {
		o.Prefix = lease.DefaultPrefix
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// buildSwitch creates the switch (bridge br0), etcd and outside namespaces.
func (l *Lab) buildSwitch(ctx context.Context) error {
	var err error
	if l.sw, err = l.newNS(ctx, "sw"); err != nil {
		return err
	}
	if err := l.sw.AddBridge("br0"); err != nil {
		return err
	}
	if l.opts.Underlay.Has6() {
		// No MLD querier on the switch: without snooping, neighbour
		// solicitations are simply flooded.
		if _, err := l.sw.Exec(ctx, "ip", "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"); err != nil {
			return err
		}
	}
	// The switch only forwards frames: keep its bridged traffic out of
	// iptables even where br_netfilter is loaded.
	_ = l.sw.Sysctl(ctx, "net.bridge.bridge-nf-call-iptables", "0")
	if l.etcdNS, err = l.newNS(ctx, "etcd"); err != nil {
		return err
	}
	if err := PlugAddrs(l.sw, "br0", "p-etcd", l.etcdNS, l.underlayAddrs(EtcdIP, EtcdIP6)...); err != nil {
		return err
	}
	if l.outNS, err = l.newNS(ctx, "out"); err != nil {
		return err
	}
	return PlugAddrs(l.sw, "br0", "p-out", l.outNS, l.underlayAddrs(OutsideIP, OutsideIP6)...)
}

// newNS creates <prefix>-<suffix> and records it for Close.
func (l *Lab) newNS(ctx context.Context, suffix string) (*NetNS, error) {
	n, err := NewNetNS(ctx, l.prefix+"-"+suffix)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.nsList = append(l.nsList, n)
	l.mu.Unlock()
	return n, nil
}

// NamePrefix is the per-lab namespace prefix (wl<4 hex>).
func (l *Lab) NamePrefix() string { return l.prefix }

// Dir is the lab's temp directory (logs, etcd data, node files).
func (l *Lab) Dir() string { return l.dir }

// Switch, EtcdNS and Outside are the infrastructure namespaces.
func (l *Lab) Switch() *NetNS  { return l.sw }
func (l *Lab) EtcdNS() *NetNS  { return l.etcdNS }
func (l *Lab) Outside() *NetNS { return l.outNS }

// Nodes returns the nodes in creation order.
func (l *Lab) Nodes() []*Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.nodes)
}

// Pods returns the pods in creation order.
func (l *Lab) Pods() []*Pod {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.pods)
}

// Exec runs a command inside n (ip netns exec) and returns its combined output.
func (l *Lab) Exec(ctx context.Context, n *NetNS, name string, args ...string) (string, error) {
	return n.Exec(ctx, name, args...)
}

// Close stops every agent and etcd, deletes every namespace and the temp dir.
// It is idempotent: later calls return the first call's result.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		defer l.mu.Unlock()
		return l.errs
	}
	l.closed = true
	nodes, nsList := slices.Clone(l.nodes), slices.Clone(l.nsList)
	l.mu.Unlock()

	var errs []error
	for _, n := range nodes {
		errs = append(errs, n.StopAgent())
	}
	if l.cli != nil {
		_ = l.cli.Close()
	}
	errs = append(errs, l.StopEtcd())
	// Pods first, then nodes, then the switch: reverse creation order.
	for _, n := range slices.Backward(nsList) {
		errs = append(errs, n.Remove())
	}
	if l.dir != "" {
		errs = append(errs, os.RemoveAll(l.dir))
	}
	err := errors.Join(errs...)
	l.mu.Lock()
	l.errs = err
	l.mu.Unlock()
	l.log.Info("lab removed", "prefix", l.prefix, "err", err)
	return err
}
