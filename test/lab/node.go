package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// healthzPort is the agents' health port; every node has its own loopback.
const healthzPort = 9180

// NodeOptions are the per-node agent settings (see Options for the meaning).
type NodeOptions struct {
	NeighMode string
	IPMasq    bool
	AgentArgs []string
	// NoStart makes AddNode leave the agent stopped: the caller starts it
	// with StartAgent (the benchmarks time a join from the agent's start).
	NoStart bool
	// NoNodeName starts the agent without --node-name: the public IP is
	// its identity (every node netns shares the host's hostname).
	NoNodeName bool
}

// Node is one node namespace with its weftd agent.
type Node struct {
	Name string     // node1, node2...
	NS   *NetNS     // <prefix>-<Name>
	IP   netip.Addr // IPv4 underlay address on eth0 (the lease's PublicIP); zero on an IPv6-only underlay
	IP6  netip.Addr // IPv6 underlay address on eth0 (the lease's PublicIPv6); zero on an IPv4-only underlay
	Dir  string     // subnet.env, IPAM data dir, CNI conf dir, agent log
	Opts NodeOptions

	lab     *Lab
	idx     int // N of nodeN
	mu      sync.Mutex
	agent   *proc
	readyAt time.Time
}

// NodeDefaults returns the lab-wide agent settings, to modify and pass to AddNode.
func (l *Lab) NodeDefaults() NodeOptions {
	return NodeOptions{NeighMode: l.opts.NeighMode, IPMasq: l.opts.IPMasq, AgentArgs: l.opts.AgentArgs}
}

// AddNode plugs a new node into the switch and starts its agent; it returns
// once /readyz answers 200 (at once with opts.NoStart).
func (l *Lab) AddNode(ctx context.Context, opts NodeOptions) (*Node, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("lab is closed")
	}
	l.nodeSeq++ // reserved under the lock: concurrent AddNode calls get distinct names
	idx := l.nodeSeq
	l.mu.Unlock()
	if idx > maxNodes {
		return nil, fmt.Errorf("too many nodes (max %d)", maxNodes)
	}
	name := "node" + strconv.Itoa(idx)
	ip4, ip6 := nodeAddrs(idx)
	n := &Node{Name: name, Dir: filepath.Join(l.dir, name), Opts: opts, lab: l, idx: idx}
	if l.opts.Underlay.Has4() {
		n.IP = ip4
	}
	if l.opts.Underlay.Has6() {
		n.IP6 = ip6
	}
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("node dir: %w", err)
	}
	var err error
	if n.NS, err = l.newNS(ctx, name); err != nil {
		return nil, err
	}
	if err := PlugAddrs(l.sw, "br0", "p-"+name, n.NS, l.underlayAddrs(ip4, ip6)...); err != nil {
		return nil, err
	}
	l.mu.Lock()
	// In name order, also when nodes are added concurrently (AddNodes).
	i, _ := slices.BinarySearchFunc(l.nodes, idx, func(m *Node, idx int) int { return m.idx - idx })
	l.nodes = slices.Insert(l.nodes, i, n)
	l.mu.Unlock()
	if opts.NoStart {
		return n, nil
	}
	if err := n.StartAgent(ctx); err != nil {
		return n, err
	}
	return n, nil
}

// AddNodes adds count nodes concurrently, as AddNode does, and returns them
// in name order once every agent is ready. On error it returns the nodes
// that were added (the lab removes them all in Close) and every error.
func (l *Lab) AddNodes(ctx context.Context, count int, opts NodeOptions) ([]*Node, error) {
	nodes := make([]*Node, count)
	errs := make([]error, count)
	var wg sync.WaitGroup
	for i := range count {
		wg.Go(func() { nodes[i], errs[i] = l.AddNode(ctx, opts) })
	}
	wg.Wait()
	nodes = slices.DeleteFunc(nodes, func(n *Node) bool { return n == nil })
	slices.SortFunc(nodes, func(a, b *Node) int { return a.idx - b.idx })
	return nodes, errors.Join(errs...)
}

// Addr is the node's underlay address of the single family f.
func (n *Node) Addr(f Family) netip.Addr { return pick(f, n.IP, n.IP6) }

// SubnetFile is the node's subnet.env.
func (n *Node) SubnetFile() string { return filepath.Join(n.Dir, "subnet.env") }

// LogFile is the agent's log (stderr, appended across restarts).
func (n *Node) LogFile() string { return filepath.Join(n.Dir, "weftd.log") }

// LogTail returns the last lines of the agent's log.
func (n *Node) LogTail(lines int) string { return tailFile(n.LogFile(), lines) }

func (n *Node) agentArgv() []string {
	o := n.Opts
	argv := []string{filepath.Join(n.lab.opts.BinDir, "weftd"), "run",
		"--etcd-endpoints", n.lab.EtcdEndpoint(),
		"--etcd-prefix", n.lab.opts.Prefix,
		"--iface", "eth0",
		"--subnet-file", n.SubnetFile(),
		"--ip-masq=" + strconv.FormatBool(o.IPMasq),
		"--healthz-ip", "127.0.0.1",
		"--healthz-port", strconv.Itoa(healthzPort),
		"--cni-conf-dir", filepath.Join(n.Dir, "net.d"),
		"--subnet-lease-ttl", "1m",
		"--log-format", "text",
	}
	if o.NeighMode != "" {
		argv = append(argv, "--neigh-mode", o.NeighMode)
	}
	if !o.NoNodeName {
		argv = append(argv, "--node-name", n.Name)
	}
	return append(argv, o.AgentArgs...)
}

// StartAgent starts `weftd run` in the node's namespace and waits until its
// /readyz answers 200 (at most 30 s, or ctx).
func (n *Node) StartAgent(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.agent != nil {
		if done, _ := n.agent.exited(); !done {
			return fmt.Errorf("%s: agent already running (pid %d)", n.Name, n.agent.PID())
		}
	}
	p, err := startProc("weftd@"+n.Name, n.NS.Name, n.LogFile(), n.lab.opts.Keep, n.agentArgv()...)
	if err != nil {
		return err
	}
	n.agent = p
	if err := n.waitReady(ctx, 30*time.Second); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		return fmt.Errorf("%s: %w\n%s", n.Name, err, p.logTail(30))
	}
	n.readyAt = time.Now()
	n.lab.log.Info("agent ready", "node", n.Name, "pid", p.PID(), "ip", n.IP)
	return nil
}

// waitReady polls /readyz every 50 ms; the caller holds n.mu.
func (n *Node) waitReady(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	client := n.httpClient()
	defer client.CloseIdleConnections()
	why := "no answer"
	for {
		if done, err := n.agent.exited(); done {
			return fmt.Errorf("agent exited before ready: %v", err)
		}
		if ok, msg := readyz(ctx, client); ok {
			return nil
		} else if msg != "" {
			why = msg
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent not ready (%s): %w", why, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// httpClient reaches the agent's health server on the node's loopback.
func (n *Node) httpClient() *http.Client {
	return &http.Client{
		Timeout:   time.Second,
		Transport: &http.Transport{DialContext: n.NS.DialContext, DisableKeepAlives: true},
	}
}

// HTTPGet fetches path (e.g. "/metrics") from the agent's health server on
// the node's loopback and returns the body of a 200 answer.
func (n *Node) HTTPGet(ctx context.Context, path string) ([]byte, error) {
	url := "http://127.0.0.1:" + strconv.Itoa(healthzPort) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: GET %s: %w", n.Name, path, err)
	}
	c := n.httpClient()
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: GET %s: %w", n.Name, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: GET %s: read body: %w", n.Name, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: GET %s: %s: %s", n.Name, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

func readyz(ctx context.Context, c *http.Client) (bool, string) {
	url := "http://127.0.0.1:" + strconv.Itoa(healthzPort) + "/readyz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return resp.StatusCode == http.StatusOK, fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
}

// Ready reports whether the agent runs and answers /readyz with 200.
func (n *Node) Ready(ctx context.Context) bool {
	n.mu.Lock()
	running := n.agent != nil
	if running {
		done, _ := n.agent.exited()
		running = !done
	}
	n.mu.Unlock()
	if !running {
		return false
	}
	ok, _ := readyz(ctx, n.httpClient())
	return ok
}

// ReadyAt is when StartAgent last saw /readyz answer 200.
func (n *Node) ReadyAt() time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.readyAt
}

// AgentPID is the running agent's PID (0 when stopped).
func (n *Node) AgentPID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.agent == nil {
		return 0
	}
	if done, _ := n.agent.exited(); done {
		return 0
	}
	return n.agent.PID()
}

// AgentExited reports whether the agent stopped on its own (not through StopAgent).
func (n *Node) AgentExited() (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.agent == nil {
		return false, nil
	}
	return n.agent.exited()
}

// StopAgent sends SIGTERM and waits (10 s, then SIGKILL and an error). The
// agent leaves its device, entries, rules and lease in place.
func (n *Node) StopAgent() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.agent == nil {
		return nil
	}
	err := n.agent.stop(10 * time.Second)
	if err != nil {
		err = fmt.Errorf("%s: %w", n.Name, err)
	}
	n.agent = nil
	return err
}

// RestartAgent stops the agent and starts it again (waiting for ready).
func (n *Node) RestartAgent(ctx context.Context) error {
	if err := n.StopAgent(); err != nil {
		return err
	}
	return n.StartAgent(ctx)
}

// Subnet is the node's lease as written to subnet.env (FLANNEL_SUBNET, masked).
func (n *Node) Subnet() (netip.Prefix, error) {
	gw, err := n.Gateway()
	if err != nil {
		return netip.Prefix{}, err
	}
	return gw.Masked(), nil
}

// Gateway is FLANNEL_SUBNET unmasked: the cni0 address (.1) with the lease length.
func (n *Node) Gateway() (netip.Prefix, error) { return n.envPrefix("FLANNEL_SUBNET") }

// Subnet6 is the node's IPv6 lease as written to subnet.env
// (FLANNEL_IPV6_SUBNET, masked).
func (n *Node) Subnet6() (netip.Prefix, error) {
	gw, err := n.envPrefix("FLANNEL_IPV6_SUBNET")
	if err != nil {
		return netip.Prefix{}, err
	}
	return gw.Masked(), nil
}

// SubnetEnv returns the KEY=VALUE lines of the node's subnet.env, in order.
func (n *Node) SubnetEnv() ([]string, error) {
	f, err := os.Open(n.SubnetFile())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.Name, err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
			lines = append(lines, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: read %s: %w", n.Name, n.SubnetFile(), err)
	}
	return lines, nil
}

// envPrefix parses the first entry of key in subnet.env as a prefix.
func (n *Node) envPrefix(key string) (netip.Prefix, error) {
	lines, err := n.SubnetEnv()
	if err != nil {
		return netip.Prefix{}, err
	}
	for _, line := range lines {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			p, err := netip.ParsePrefix(strings.Split(v, ",")[0])
			if err != nil {
				return netip.Prefix{}, fmt.Errorf("%s: %s: %w", n.Name, key, err)
			}
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("%s: no %s in %s", n.Name, key, n.SubnetFile())
}

// Lease returns the node's key in etcd: the one whose PublicIP is the
// node's IPv4 address or, for an IPv6-only lease, whose PublicIPv6 is the
// node's IPv6 address.
func (n *Node) Lease(ctx context.Context) (LeaseKV, error) {
	leases, err := n.lab.Leases(ctx)
	if err != nil {
		return LeaseKV{}, err
	}
	for _, lk := range leases {
		if lk.Err != nil {
			continue
		}
		if (n.IP.IsValid() && lk.PublicIP == n.IP) || (!lk.Subnet.IsValid() && n.IP6.IsValid() && lk.PublicIPv6 == n.IP6) {
			return lk, nil
		}
	}
	return LeaseKV{}, fmt.Errorf("%s: no lease with PublicIP %s or PublicIPv6 %s", n.Name, n.IP, n.IP6)
}
