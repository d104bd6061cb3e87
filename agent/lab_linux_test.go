package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/underlay"
	"github.com/weftnet/weft/host"
	"github.com/weftnet/weft/lease/etcdstore"
	"github.com/weftnet/weft/lease/etcdstore/etcdtest"
	"github.com/weftnet/weft/test/nettest"
	"github.com/weftnet/weft/test/testlog"
)

// The privileged agent tests run real agents in-process, each with its
// netlink handle, sysctls and nftables bound to its own node netns:
//
//	   node1 netns              switch netns              node2 netns
//	 eth0 198.18.0.1/24 ──── br0 (bridge) ──── eth0 198.18.0.2/24   (node3 ...)
//	 flannel.1 10.244.x.0/32                    flannel.1 10.244.y.0/32
//
// etcd is the embedded server on 127.0.0.1 of the test process's namespace;
// the agents' etcd clients dial it from there (only netlink work is per-node).

const testNetConf = `{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}`

type cluster struct {
	t         *testing.T
	endpoints []string
	prefix    string
	cli       *clientv3.Client
	tls       etcdtest.TLSFiles
	sw        *nettest.NS
	nextIP    int
}

func newCluster(t *testing.T, endpoints []string) *cluster {
	t.Helper()
	return newClusterTLS(t, endpoints, etcdtest.TLSFiles{})
}

func newClusterTLS(t *testing.T, endpoints []string, tls etcdtest.TLSFiles) *cluster {
	t.Helper()
	cli, err := etcdstore.NewClient(tlsClientConfig(endpoints, tls))
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	c := &cluster{t: t, endpoints: endpoints, tls: tls, prefix: "/weft-test-" + strings.ToLower(t.Name()), cli: cli, nextIP: 1}
	c.prefix = strings.NewReplacer("/", "-", " ", "-").Replace(c.prefix)
	c.prefix = "/" + strings.TrimLeft(c.prefix, "-") + "/network"
	if _, err := cli.Put(t.Context(), c.prefix+"/config", testNetConf); err != nil {
		t.Fatalf("put config: %v", err)
	}
	c.sw = nettest.NewNS(t, "ag-sw")
	h := nettest.Handle(t, c.sw.NetNS)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatalf("add br0: %v", err)
	}
	if err := h.LinkSetUp(br); err != nil {
		t.Fatalf("br0 up: %v", err)
	}
	return c
}

// node is one node netns with an agent that can be started and stopped.
type node struct {
	c       *cluster
	name    string
	ns      *nettest.NS
	ip      string
	dir     string
	cfg     agent.Config
	metrics *agent.Metrics
	ag      *agent.Agent
	cancel  context.CancelFunc
	done    chan error
}

func (c *cluster) addNode(mode backend.Mode) *node {
	t := c.t
	t.Helper()
	n := &node{c: c, name: fmt.Sprintf("node%d", c.nextIP), ip: fmt.Sprintf("198.18.0.%d", c.nextIP), dir: t.TempDir()}
	c.nextIP++
	n.ns = nettest.NewNS(t, "ag-"+n.name)
	port := "p" + n.name
	nettest.Veth(t, n.ns, "eth0", n.ip+"/24", c.sw, port, "")
	hsw := nettest.Handle(t, c.sw.NetNS)
	pl, err := hsw.LinkByName(port)
	if err == nil {
		var br netlink.Link
		if br, err = hsw.LinkByName("br0"); err == nil {
			err = hsw.LinkSetMaster(pl, br)
		}
	}
	if err != nil {
		t.Fatalf("attach %s to br0: %v", port, err)
	}
	n.cfg = agent.DefaultConfig()
	n.cfg.Ifaces = []string{"eth0"}
	n.cfg.NodeName = n.name
	n.cfg.SubnetFile = filepath.Join(n.dir, "subnet.env")
	n.cfg.CNIConfDir = filepath.Join(n.dir, "net.d")
	n.cfg.NeighMode = mode
	n.cfg.SubnetLeaseTTL = time.Minute
	n.cfg.IPMasq = true
	if err := n.cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	t.Cleanup(n.stop)
	return n
}

// start runs the agent and waits until it is ready.
func (n *node) start() {
	t := n.c.t
	t.Helper()
	n.launch()
	eventually(t, 20*time.Second, n.name+" ready", func() error {
		if err := n.exited(); err != nil {
			return err
		}
		if ok, why := n.ag.Ready(); !ok {
			return fmt.Errorf("%s", why)
		}
		return nil
	})
}

// exited returns an error if the agent's Run has returned.
func (n *node) exited() error {
	select {
	case err := <-n.done:
		n.done <- err
		return fmt.Errorf("agent exited: %v", err)
	default:
		return nil
	}
}

// launch runs the agent without waiting for it.
func (n *node) launch() {
	t := n.c.t
	t.Helper()
	cli, err := etcdstore.NewClient(tlsClientConfig(n.c.endpoints, n.c.tls))
	if err != nil {
		t.Fatalf("%s: etcd client: %v", n.name, err)
	}
	log := testlog.New(t, slog.LevelInfo).With("node", n.name)
	n.metrics = agent.NewMetrics()
	store := etcdstore.New(cli, n.c.prefix, log, etcdstore.WithObserver(n.metrics.ObserveEtcd))
	h, err := host.Open(n.ns.Path)
	if err != nil {
		t.Fatalf("%s: host: %v", n.name, err)
	}
	// Until Run starts, h is closed by the test's cleanup; after, by the
	// goroutine below once Run has returned. A cleanup that closed it
	// unconditionally would run before the stop cleanup of an agent
	// started later in the test (cleanups run last-registered first) and
	// pull the handle from under its running datapath.
	running := false
	t.Cleanup(func() {
		if !running {
			_ = h.Close()
		}
	})
	ul, err := underlay.Find(h, n.cfg.UnderlayOptions())
	if err != nil {
		t.Fatalf("%s: underlay: %v", n.name, err)
	}
	n.ag, err = agent.New(n.cfg, agent.Deps{
		Leases: store,
		NewDatapath: func(c backend.Config) (agent.Datapath, error) {
			return backend.New(h, c, log.With("component", "vxlan"))
		},
		Masq:     agent.NewNftables(h, log),
		Underlay: ul,
		Log:      log,
		Metrics:  n.metrics,
	})
	if err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.done = cancel, make(chan error, 1)
	go func() {
		err := n.ag.Run(ctx)
		h.Close()
		_ = cli.Close()
		n.done <- err
	}()
	running = true
}

// stop ends the agent (SIGTERM semantics: state stays) and checks it returned cleanly.
func (n *node) stop() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	select {
	case err := <-n.done:
		if err != nil {
			n.c.t.Errorf("%s: agent returned %v", n.name, err)
		}
	case <-time.After(15 * time.Second):
		n.c.t.Errorf("%s: agent did not stop within 15s", n.name)
	}
	n.cancel = nil
}

func (n *node) exec(args ...string) (string, error) { return n.ns.Exec(n.c.t, args[0], args[1:]...) }

func tlsClientConfig(endpoints []string, f etcdtest.TLSFiles) etcdstore.ClientConfig {
	return etcdstore.ClientConfig{Endpoints: endpoints, CAFile: f.CAFile, CertFile: f.CertFile, KeyFile: f.KeyFile, DialTimeout: 5 * time.Second}
}

func eventually(t *testing.T, within time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not true within %s: %v", what, within, err)
}

// sampled reads a histogram without labels from m's registry: its sample count and mean.
func sampled(t *testing.T, m *agent.Metrics, name string) (uint64, time.Duration) {
	t.Helper()
	for _, mf := range gather(t, m) {
		if mf.GetName() != name || len(mf.GetMetric()) == 0 {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		if h.GetSampleCount() == 0 {
			return 0, 0
		}
		return h.GetSampleCount(), time.Duration(h.GetSampleSum() / float64(h.GetSampleCount()) * float64(time.Second))
	}
	t.Fatalf("metric %s not registered", name)
	return 0, 0
}

// counterSum adds up every labelled series of a counter in m's registry.
func counterSum(t *testing.T, m *agent.Metrics, name string) float64 {
	t.Helper()
	sum := 0.0
	for _, mf := range gather(t, m) {
		if mf.GetName() == name {
			for _, s := range mf.GetMetric() {
				sum += s.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func gather(t *testing.T, m *agent.Metrics) []*dto.MetricFamily {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// counter reads a counter (or gauge) without labels from m's registry.
func counter(t *testing.T, m *agent.Metrics, name string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) == 0 {
			continue
		}
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}
