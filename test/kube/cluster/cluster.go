package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/test/lab"
)

// Addresses of the cluster. Every one of them exists only inside the
// cluster's namespaces. The cluster is dual stack: the underlay, the pods
// and the Services have an address of each family, IPv4 the primary one.
var (
	Underlay            = netip.MustParsePrefix("198.18.0.0/24")    // the switch; node N is .N
	Underlay6           = netip.MustParsePrefix("fd00:198:18::/64") // the switch; node N is ::N
	CPIP                = netip.MustParseAddr("198.18.0.254")       // control plane: etcd, apiserver
	CPIP6               = netip.MustParseAddr("fd00:198:18::254")   // the nodes' IPv6 default route
	PodCIDR             = netip.MustParsePrefix("10.244.0.0/16")    // net-conf.json of manifests/weft.yaml
	PodCIDR6            = netip.MustParsePrefix("fc00::/48")        // IPv6Network of NetConf
	ServiceCIDR         = netip.MustParsePrefix("10.96.0.0/16")     // primary: single-stack Services
	ServiceCIDR6        = netip.MustParsePrefix("fd00:10:96::/112") // dual-stack Services' second address
	KubernetesServiceIP = netip.MustParseAddr("10.96.0.1")
	ClusterDNSIP        = netip.MustParseAddr("10.96.0.10") // kube-dns Service, kubelet's clusterDNS
)

// NetConf is weft's network config in the cluster (written by `weftd
// init-network` from the ConfigMap, see NetConfPatch): dual stack, the IPv4
// part as manifests/weft.yaml ships it.
const NetConf = `{
  "Network": "10.244.0.0/16",
  "SubnetLen": 24,
  "EnableIPv6": true,
  "IPv6Network": "fc00::/48",
  "IPv6SubnetLen": 64,
  "Backend": {
    "Type": "vxlan",
    "VNI": 1,
    "Port": 8472
  }
}`

// dualList is "<v4>,<v6>", the form of every dual-stack flag and field.
func dualList[T interface{ String() string }](v4, v6 T) string {
	return v4.String() + "," + v6.String()
}

// Commands the cluster needs in Options.KubeBin.
var KubeCommands = []string{"kubelet", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
	"kube-proxy", "kubectl", "containerd", "containerd-shim-runc-v2", "ctr", "crictl"}

// Options describe a cluster.
type Options struct {
	KubeBin    string   // directory with KubeCommands (WEFT_KUBE_BIN)
	EtcdBin    string   // the weft-etcd binary
	Images     []string // docker-archive tarballs imported into every node's containerd
	PauseImage string   // sandbox image (one of Images), pinned in containerd
	ProxyMode  string   // kube-proxy mode at start: iptables (default) or nftables
	Nodes      int      // default 2
	Log        *slog.Logger
}

// Cluster is a running control plane and its nodes. Close removes it all.
type Cluster struct {
	opts   Options
	log    *slog.Logger
	prefix string // random "wk<4 hex>": in every name the cluster creates
	dir    string // configs, logs, etcd data, the nodes' directories
	env    []string

	sw, cp *lab.NetNS
	pki    *pki
	api    *http.Client

	mu      sync.Mutex
	cpProcs []*proc
	nodes   []*Node
	nsList  []*lab.NetNS
	sysctls bool // registered in the machine-wide sysctl state
	closing bool
	closed  chan struct{} // closed when the first Close has finished
	errs    error
}

// New builds the switch, the control plane and the nodes, and returns once
// every node is registered (NotReady: no network yet). On error everything
// created so far is removed.
func New(ctx context.Context, opts Options) (c *Cluster, err error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	c = &Cluster{opts: opts, log: opts.Log, prefix: lab.FreePrefix("wk"), closed: make(chan struct{})}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
			c = nil
		}
	}()
	start := time.Now()
	if c.dir, err = os.MkdirTemp("", "weft-kube-"+c.prefix+"-"); err != nil {
		return c, fmt.Errorf("cluster dir: %w", err)
	}
	home := filepath.Join(c.dir, "home")
	for _, d := range []string{filepath.Join(c.dir, "logs"), home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return c, fmt.Errorf("cluster dir: %w", err)
		}
	}
	// HOME inside the run directory: nothing the cluster runs writes to the
	// invoking user's home (kubectl's cache, for one).
	c.env = append(cleanEnv(opts.KubeBin), "HOME="+home)
	if err := c.buildNetwork(); err != nil {
		return c, err
	}
	if err := c.startControlPlane(ctx); err != nil {
		return c, err
	}
	c.log.Info("control plane ready", "prefix", c.prefix, "took", time.Since(start).Round(time.Millisecond))
	if err := registerSysctls(c.prefix); err != nil {
		return c, err
	}
	c.mu.Lock()
	c.sysctls = true
	c.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(c.Nodes()))
	for i, n := range c.Nodes() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.start(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	for _, n := range c.Nodes() {
		if err := c.waitNodeRegistered(ctx, n); err != nil {
			return c, err
		}
	}
	c.log.Info("nodes registered", "prefix", c.prefix, "dir", c.dir, "took", time.Since(start).Round(time.Millisecond))
	return c, nil
}

func (o *Options) defaults() error {
	if o.KubeBin == "" {
		return errors.New("cluster: Options.KubeBin is required")
	}
	for _, b := range KubeCommands {
		if _, err := os.Stat(filepath.Join(o.KubeBin, b)); err != nil {
			return fmt.Errorf("cluster: %w (run make kube-bins)", err)
		}
	}
	if _, err := os.Stat(o.EtcdBin); err != nil {
		return fmt.Errorf("cluster: weft-etcd: %w", err)
	}
	if o.PauseImage == "" {
		return errors.New("cluster: Options.PauseImage is required")
	}
	switch o.ProxyMode {
	case "":
		o.ProxyMode = "iptables"
	case "iptables", "nftables":
	default:
		return fmt.Errorf("cluster: kube-proxy mode %q: want iptables or nftables", o.ProxyMode)
	}
	if o.Nodes == 0 {
		o.Nodes = 2
	}
	if o.Nodes < 1 || o.Nodes > 200 {
		return fmt.Errorf("cluster: %d nodes: want 1..200", o.Nodes)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// buildNetwork creates the switch, the control-plane namespace and every
// node's namespace, each plugged into the switch.
func (c *Cluster) buildNetwork() error {
	var err error
	if c.sw, err = c.newNS("sw"); err != nil {
		return err
	}
	if err := c.sw.AddBridge("br0"); err != nil {
		return err
	}
	// No MLD querier on the switch: with snooping off the bridge floods the
	// IPv6 neighbour solicitations instead of relying on group reports.
	if _, err := c.sw.Exec(context.Background(), "ip", "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"); err != nil {
		return err
	}
	if c.cp, err = c.newNS("cp"); err != nil {
		return err
	}
	if err := lab.Plug(c.sw, "br0", "p-cp", c.cp, netip.PrefixFrom(CPIP, Underlay.Bits()), netip.Addr{}); err != nil {
		return err
	}
	if err := addIPv6(c.cp, netip.PrefixFrom(CPIP6, Underlay6.Bits()), netip.Addr{}); err != nil {
		return err
	}
	for i := 1; i <= c.opts.Nodes; i++ {
		name := "node" + strconv.Itoa(i)
		ip := Underlay.Addr().As4()
		ip[3] = byte(i)
		n := &Node{Name: name, IP: netip.AddrFrom4(ip), IP6: nodeIP6(i), Dir: filepath.Join(c.dir, name), Cgroup: c.prefix + "-" + name, c: c}
		if err := os.MkdirAll(n.Dir, 0o755); err != nil {
			return fmt.Errorf("node dir: %w", err)
		}
		if n.NS, err = c.newNS(name); err != nil {
			return err
		}
		// The default route via the control plane: kube-proxy and weftd
		// take the node IP from it.
		if err := lab.Plug(c.sw, "br0", "p-"+name, n.NS, netip.PrefixFrom(n.IP, Underlay.Bits()), CPIP); err != nil {
			return err
		}
		if err := addIPv6(n.NS, netip.PrefixFrom(n.IP6, Underlay6.Bits()), CPIP6); err != nil {
			return err
		}
		c.mu.Lock()
		c.nodes = append(c.nodes, n)
		c.mu.Unlock()
	}
	return nil
}

// nodeIP6 is node i's IPv6 underlay address, fd00:198:18::<i> (the decimal
// digits of i, read as hex: node 12 is ::12 as node 12 is .12 in IPv4).
func nodeIP6(i int) netip.Addr {
	a, err := netip.ParseAddr(Underlay6.Addr().String() + strconv.Itoa(i))
	if err != nil {
		panic(err) // i ≤ 200 (Options.defaults)
	}
	return a
}

// addIPv6 adds addr to eth0 in ns without duplicate address detection (a
// tentative address is no source: weftd would skip it and the daemons fail
// to bind), plus a default route via gw when valid.
func addIPv6(ns *lab.NetNS, addr netip.Prefix, gw netip.Addr) error {
	h, err := ns.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("find eth0 in %s: %w", ns.Name, err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), 128)}, Flags: unix.IFA_F_NODAD}
	if err := h.AddrAdd(l, a); err != nil {
		return fmt.Errorf("add %s to eth0 in %s: %w", addr, ns.Name, err)
	}
	if !gw.IsValid() {
		return nil
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
		return fmt.Errorf("IPv6 default route via %s in %s: %w", gw, ns.Name, err)
	}
	return nil
}

func (c *Cluster) newNS(suffix string) (*lab.NetNS, error) {
	n, err := lab.NewNetNS(context.Background(), c.prefix+"-"+suffix)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.nsList = append(c.nsList, n)
	c.mu.Unlock()
	return n, nil
}

func (c *Cluster) waitNodeRegistered(ctx context.Context, n *Node) error {
	return c.poll(ctx, n.Name, 60*time.Second, func() (bool, string) {
		if err := n.Exited(); err != nil {
			return false, err.Error()
		}
		var node struct{}
		if err := c.Get(ctx, "/api/v1/nodes/"+n.Name, &node); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

func (c *Cluster) bin(name string) string { return filepath.Join(c.opts.KubeBin, name) }

// Prefix is the random prefix in every name the cluster creates.
func (c *Cluster) Prefix() string { return c.prefix }

// Dir is the cluster's directory (configs, logs, node directories).
func (c *Cluster) Dir() string { return c.dir }

// Kubeconfig is the path of the admin kubeconfig.
func (c *Cluster) Kubeconfig() string { return filepath.Join(c.dir, "kubeconfig") }

// ControlPlane is the control-plane namespace, on the switch like the
// nodes: a client there is outside the cluster's pod network.
func (c *Cluster) ControlPlane() *lab.NetNS { return c.cp }

// Nodes returns the nodes in order (node1 first).
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// Node returns the node named name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes() {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// EtcdEndpoint is weft-etcd's client URL, shared by the apiserver and weft.
func (c *Cluster) EtcdEndpoint() string { return "http://" + CPIP.String() + ":2379" }

// Kubectl runs kubectl against the cluster (inside the control-plane
// namespace) with stdin, returning its combined output.
func (c *Cluster) Kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	argv := append([]string{"nsenter", "--net=" + c.cp.Path, "--", c.bin("kubectl"),
		"--kubeconfig=" + c.Kubeconfig(), "--cache-dir=" + filepath.Join(c.dir, "kubectl-cache")}, args...)
	return runCmd(ctx, c.env, stdin, argv...)
}

// Close stops every process, removes the nodes' cgroups, every namespace
// and the cluster directory, and restores the machine-wide sysctls the
// kubelets changed. It is idempotent and safe for concurrent use (the test's
// cleanup, the signal handler, the deadline guard): later calls wait for the
// first to finish and return its result.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		<-c.closed
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.errs
	}
	c.closing = true
	nodes, cpProcs, nsList, sysctls := slices.Clone(c.nodes), slices.Clone(c.cpProcs), slices.Clone(c.nsList), c.sysctls
	c.mu.Unlock()
	start := time.Now()

	var errs []error
	var wg sync.WaitGroup
	nodeErrs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodeErrs[i] = n.stop()
		}()
	}
	wg.Wait()
	errs = append(errs, nodeErrs...)
	for _, n := range nodes {
		errs = append(errs, removeCgroupRoot(n.Cgroup))
	}
	if sysctls {
		errs = append(errs, releaseSysctls(c.prefix))
	}
	// Scheduler and controller manager first, etcd last.
	for _, p := range slices.Backward(cpProcs) {
		if _, err := p.stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range slices.Backward(nsList) {
		errs = append(errs, n.Remove())
	}
	if c.dir != "" && !c.holdersAlive(nodes) {
		errs = append(errs, os.RemoveAll(c.dir))
	}
	err := errors.Join(errs...)
	c.mu.Lock()
	c.errs = err
	c.mu.Unlock()
	close(c.closed)
	c.log.Info("cluster removed", "prefix", c.prefix, "took", time.Since(start).Round(time.Millisecond), "err", err)
	return err
}

// holdersAlive reports whether a node's mount namespace may still exist;
// then the directory stays (with an error from stop) rather than being
// removed under live mounts.
func (c *Cluster) holdersAlive(nodes []*Node) bool {
	for _, n := range nodes {
		n.mu.Lock()
		h := n.holder
		n.mu.Unlock()
		if h == nil {
			continue
		}
		if done, _ := h.exited(); !done {
			return true
		}
		if n.mntNS != "" && len(mountNSPIDs(n.mntNS, 0)) > 0 {
			return true
		}
	}
	return false
}
