package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/weftnet/weft/atomicfile"
	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/underlay"
	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/subnetenv"
)

// Agent runs one node's share of the overlay.
type Agent struct {
	cfg         Config
	leases      Leases
	newDatapath func(backend.Config) (Datapath, error)
	masq        Masq
	underlay    underlay.Underlay
	metrics     *Metrics
	log         *slog.Logger
	ready       readiness
	// configRetry is how often a missing network config is looked up again.
	configRetry time.Duration

	// set during Run
	lease lease.Lease
}

// New returns an agent; cfg must have passed Validate. It fails when a
// dependency is missing.
func New(cfg Config, deps Deps) (*Agent, error) {
	if err := deps.check(); err != nil {
		return nil, err
	}
	return &Agent{
		cfg: cfg, leases: deps.Leases, newDatapath: deps.NewDatapath, masq: deps.Masq, underlay: deps.Underlay,
		metrics: deps.Metrics, log: deps.Log, configRetry: time.Second,
	}, nil
}

// Lease returns the lease acquired by Run (zero before).
func (a *Agent) Lease() lease.Lease { return a.lease }

// Ready reports readiness as /readyz does.
func (a *Agent) Ready() (bool, string) { return a.readyz() }

// Run starts the agent and blocks until ctx ends or a loop fails. It leaves
// the lease, device, entries and rules in place when it returns.
func (a *Agent) Run(ctx context.Context) error {
	release, err := a.holdAliveLock(ctx)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	defer release()
	g, ctx := errgroup.WithContext(ctx)
	if a.cfg.HealthzPort != 0 {
		addr := hostPort(a.cfg.HealthzIP, a.cfg.HealthzPort)
		g.Go(func() error { return serve(ctx, addr, a.handler(true), a.log) })
	}
	if a.cfg.MetricsPort != 0 && a.cfg.MetricsPort != a.cfg.HealthzPort {
		addr := hostPort(a.cfg.HealthzIP, a.cfg.MetricsPort)
		g.Go(func() error { return serve(ctx, addr, a.handler(true), a.log) })
	}
	g.Go(func() error { return a.run(ctx, g) })
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// run does the start-up sequence, then adds the long-running loops to g.
func (a *Agent) run(ctx context.Context, g *errgroup.Group) error {
	if err := a.withdrawStaleCNIConf(); err != nil {
		return err
	}
	nw, err := a.waitNetworkConfig(ctx)
	if err != nil {
		return err
	}
	ul := a.underlay
	a.log.Info("using underlay", "iface", ul.Name, "ip", ul.IP, "public_ip", ul.PublicIP,
		"ipv6", ul.IPv6, "public_ipv6", ul.PublicIPv6, "mtu", ul.MTU)
	// Refuse a family the underlay cannot carry before anything is created:
	// never half of a dual-stack network.
	if err := checkUnderlay(nw, ul); err != nil {
		return err
	}
	// Before the devices exist, so that they are never up unguarded.
	rs := a.guardRouterAdverts(deviceNames(nw))

	planes, err := a.makePlanes(nw, ul, rs.raGuarded)
	if err != nil {
		return err
	}
	a.ready.planes.Store(&planes)

	l, err := a.acquire(ctx, ul, planes, nw)
	if err != nil {
		return err
	}
	a.lease = l
	a.ready.leaseHeld.Store(true)
	for _, p := range planes {
		if err := p.dp.SetAddress(p.subnet(l)); err != nil {
			return fmt.Errorf("set %s device address: %w", p.family(), err)
		}
	}
	if err := a.ensureRules(rs, nw, l); err != nil {
		return err
	}
	if err := a.writeSubnetEnv(nw, l, minMTU(planes)); err != nil {
		return err
	}
	if err := a.installCNIConf(); err != nil {
		return err
	}

	w := newWatcher(a.leases, planes, nw, l, a.log, a.metrics)
	g.Go(func() error { return a.keepAlive(ctx, l) })
	g.Go(func() error { return w.run(ctx) })
	for _, p := range planes {
		g.Go(func() error { return p.dp.Run(ctx) })
	}
	g.Go(func() error { return a.rulesLoop(ctx, rs) })
	return nil
}

// waitNetworkConfig reads <prefix>/config, retrying while it is missing or invalid.
func (a *Agent) waitNetworkConfig(ctx context.Context) (*lease.Network, error) {
	logged := ""
	for {
		nw, err := a.leases.NetworkConfig(ctx)
		if err == nil {
			if nw.Backend.Type != "vxlan" {
				return nil, fmt.Errorf("backend type %q: weft supports only vxlan", nw.Backend.Type)
			}
			a.log.Info("network config", "network", nw.Network, "subnet_len", nw.SubnetLen,
				"vni", nw.Backend.VNI, "port", cmp.Or(nw.Backend.Port, backend.DefaultPort), "direct_routing", nw.Backend.DirectRouting)
			return nw, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if msg := err.Error(); msg != logged {
			switch {
			case errors.Is(err, lease.ErrNoConfig):
				a.log.Warn("waiting for the network config; create it with `weftd init-network` or `etcdctl put <prefix>/config '{\"Network\":\"10.244.0.0/16\",\"Backend\":{\"Type\":\"vxlan\"}}'`", "err", err)
			case a.metrics.etcdDown() != "":
				// etcd does not answer: the store logs that (at most every 30 s) and /readyz names it.
				a.log.Debug("waiting for etcd to read the network config", "err", err)
			default:
				a.log.Warn("waiting for a usable network config", "err", err)
			}
			logged = msg
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(a.configRetry):
		}
	}
}

func (a *Agent) acquire(ctx context.Context, ul underlay.Underlay, planes []*plane, nw *lease.Network) (lease.Lease, error) {
	req := lease.Request{
		Attrs:      lease.Attrs{BackendType: "vxlan", NodeName: a.cfg.NodeName},
		TTL:        a.cfg.SubnetLeaseTTL,
		LegacyName: a.cfg.Hostname,
	}
	var macs []any
	for _, p := range planes {
		data := &lease.VXLANData{VNI: nw.Backend.VNI, VtepMAC: p.dev.MAC}
		if p.v6 {
			req.Attrs.PublicIPv6, req.Attrs.BackendV6Data = ul.PublicIPv6, data
			macs = append(macs, "vtep_mac_v6", p.dev.MAC.String())
		} else {
			req.Attrs.PublicIP, req.Attrs.BackendData = ul.PublicIP, data
			macs = append(macs, "vtep_mac", p.dev.MAC.String())
		}
	}
	if prev, err := subnetenv.ReadSubnetEnv(a.cfg.SubnetFile); err == nil {
		if prev.Subnet.IsValid() {
			req.Prev = prev.Subnet.Masked()
		}
		if prev.IPv6Subnet.IsValid() {
			req.PrevIPv6 = prev.IPv6Subnet.Masked()
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		a.log.Warn("ignoring unreadable previous subnet file", "err", err)
	}
	l, err := a.leases.Acquire(ctx, nw, req)
	if err != nil {
		return lease.Lease{}, fmt.Errorf("acquire lease: %w", err)
	}
	a.log.Info("lease acquired", append([]any{"key", l.Key(), "public_ip", l.Attrs.PublicIP, "public_ipv6", l.Attrs.PublicIPv6,
		"reservation", l.Reservation, "previous", req.Prev, "previous_ipv6", req.PrevIPv6}, macs...)...)
	return l, nil
}

// writeSubnetEnv writes the lines of each family nw enables (flannel's
// format: the block's first address with the block's length) and the pods'
// MTU.
func (a *Agent) writeSubnetEnv(nw *lease.Network, l lease.Lease, mtu int) error {
	env := subnetenv.SubnetEnv{MTU: mtu, IPMasq: a.cfg.IPMasq}
	if nw.EnableIPv4 {
		env.Network = nw.Network
		env.Subnet = netip.PrefixFrom(l.Subnet.Addr().Next(), l.Subnet.Bits())
	}
	if nw.EnableIPv6 {
		env.IPv6Network = nw.IPv6Network
		env.IPv6Subnet = netip.PrefixFrom(l.IPv6Subnet.Addr().Next(), l.IPv6Subnet.Bits())
	}
	if err := subnetenv.WriteSubnetEnv(a.cfg.SubnetFile, env); err != nil {
		return fmt.Errorf("write subnet file: %w", err)
	}
	a.ready.subnetEnv.Store(true)
	a.log.Info("wrote subnet file", "path", a.cfg.SubnetFile, "subnet", env.Subnet, "ipv6_subnet", env.IPv6Subnet, "mtu", mtu)
	return nil
}

// DefaultConflist is installed when --cni-conf-source is not given. It is
// manifests/10-weft.conflist byte for byte (a test in manifests pins them
// together).
const DefaultConflist = `{
  "name": "cbr0",
  "cniVersion": "1.0.0",
  "cniVersions": ["1.0.0", "1.1.0"],
  "plugins": [
    {
      "type": "weft",
      "hairpinMode": true,
      "isDefaultGateway": true
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      }
    }
  ]
}
`

// withdrawStaleCNIConf removes our conflist when subnet.env is missing: after
// a reboot /run is empty but /etc/cni/net.d is not, and a runtime that sees a
// conflist reports the node network ready and schedules pods whose ADD can
// only fail. installCNIConf puts it back once subnet.env is written. Only a
// conflist of ours goes: the file we install, holding a weft plugin.
func (a *Agent) withdrawStaleCNIConf() error {
	if a.cfg.CNIConfDir == "" {
		return nil
	}
	if _, err := os.Stat(a.cfg.SubnetFile); err == nil || !errors.Is(err, os.ErrNotExist) {
		return nil // present, or unreadable: not the reboot case
	}
	_, name, err := a.cniConf()
	if err != nil {
		return err
	}
	dst := filepath.Join(a.cfg.CNIConfDir, name)
	b, err := os.ReadFile(dst)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read CNI config %s: %w", dst, err)
	}
	if !isWeftConflist(b) {
		a.log.Warn("leaving a CNI config that is not weft's in place although subnet.env is missing", "path", dst)
		return nil
	}
	if err := os.Remove(dst); err != nil {
		return fmt.Errorf("remove stale CNI config: %w", err)
	}
	a.log.Info("removed our CNI config until subnet.env is written again (after a reboot /run is empty)",
		"path", dst, "subnet_file", a.cfg.SubnetFile)
	return nil
}

// isWeftConflist reports whether b is a CNI conflist with a weft plugin.
func isWeftConflist(b []byte) bool {
	var c struct {
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if json.Unmarshal(b, &c) != nil {
		return false
	}
	for _, p := range c.Plugins {
		if p.Type == "weft" {
			return true
		}
	}
	return false
}

// cniConf is the conflist to install and its file name.
func (a *Agent) cniConf() ([]byte, string, error) {
	if a.cfg.CNIConfSource == "" {
		return []byte(DefaultConflist), "10-weft.conflist", nil
	}
	b, err := os.ReadFile(a.cfg.CNIConfSource)
	if err != nil {
		return nil, "", fmt.Errorf("read CNI config source: %w", err)
	}
	return b, filepath.Base(a.cfg.CNIConfSource), nil
}

// installCNIConf writes the conflist into the CNI config dir, atomically, after
// subnet.env exists (the kubelet reports the node network ready once it sees it).
func (a *Agent) installCNIConf() error {
	if a.cfg.CNIConfDir == "" {
		return nil
	}
	data, name, err := a.cniConf()
	if err != nil {
		return err
	}
	dst := filepath.Join(a.cfg.CNIConfDir, name)
	if err := atomicfile.Write(dst, data, 0o644); err != nil {
		return fmt.Errorf("install CNI config: %w", err)
	}
	a.log.Info("installed CNI config", "path", dst)
	return nil
}

func (a *Agent) keepAlive(ctx context.Context, l lease.Lease) error {
	err := a.leases.KeepAlive(ctx, l)
	if ctx.Err() != nil {
		return nil
	}
	a.ready.leaseHeld.Store(false)
	if errors.Is(err, lease.ErrNameConflict) {
		// Fighting back would flip the subnet between two nodes on every
		// renewal. Keep the datapath as it is, say why, and stay unready
		// until the operator gives the nodes distinct names.
		a.metrics.leaseConflicts.Inc()
		reason := "lease conflict: " + err.Error()
		a.ready.conflict.Store(&reason)
		a.log.Error("another node took our lease; not taking it back", "err", err)
		return nil
	}
	if err == nil {
		err = errors.New("keepalive ended")
	}
	return fmt.Errorf("keep lease %s alive: %w", l.Key(), err)
}
