package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/agent"
	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/underlay"
	"github.com/weftnet/weft/host"
)

func newRunCmd(g *globalFlags) *cobra.Command {
	cfg := agent.DefaultConfig()
	neighMode := string(cfg.NeighMode)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the node agent",
		Long: `Run the node agent: lease a subnet, create flannel.1, program every peer,
answer kernel miss events, write subnet.env and install the CNI conflist.
Every flag can also be set as WEFT_<FLAG> (for example WEFT_ETCD_ENDPOINTS).
Without --etcd-endpoints an embedded single-node etcd is started in --data-dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.NeighMode = backend.Mode(neighMode)
			// The hostname is no identity (cloned VMs, several agents on
			// one host share it): only an explicit --node-name is. It is
			// passed on only to recognise leases older releases wrote.
			cfg.Hostname, _ = os.Hostname()
			if err := cfg.Validate(); err != nil {
				return err
			}
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			metrics := agent.NewMetrics()
			conn, err := g.openEtcd(cmd.Context(), log, cmd.ErrOrStderr(), etcdHooks{observe: metrics.ObserveEtcd, health: metrics.EtcdHealth})
			if err != nil {
				return err
			}
			defer conn.Close()
			nl, err := host.Open("")
			if err != nil {
				return fmt.Errorf("open the host's network namespace: %w", err)
			}
			defer func() { _ = nl.Close() }()
			// The agent stops if the etcd weftd started exits under it.
			ctx, cancel := context.WithCancelCause(cmd.Context())
			defer cancel(nil)
			if exited := conn.childExited(); exited != nil {
				go func() {
					select {
					case <-exited:
						cancel(errEtcdExited)
					case <-ctx.Done():
					}
				}()
			}
			node := cfg.NodeName
			if node == "" {
				node = "(none: the public IP identifies this node)"
			}
			log.Info("weftd starting", "version", agent.Version, "node", node, "neigh_mode", cfg.NeighMode)
			ag, err := newAgent(ctx, cfg, conn.store, nl, metrics, log)
			if err == nil {
				err = ag.Run(ctx)
			}
			if cause := context.Cause(ctx); errors.Is(cause, errEtcdExited) {
				err = fmt.Errorf("%w (%v)", cause, conn.child.err)
			}
			if err != nil {
				log.Error("weftd stopped", "err", err)
				return err
			}
			log.Info("weftd stopped; lease, device, entries and rules stay in place")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&cfg.Ifaces, "iface", nil, "interface (name or IP) for inter-node traffic; repeatable, first match wins")
	f.StringSliceVar(&cfg.IfaceRegex, "iface-regex", nil, "regex matching the interface name or IP; repeatable")
	f.StringVar(&cfg.IfaceCanReach, "iface-can-reach", "", "use the interface of the route to this IP")
	f.StringVar(&cfg.PublicIP, "public-ip", "", "IP other nodes use to reach this node (default: the interface's IP)")
	f.StringVar(&cfg.PublicIPv6, "public-ipv6", "", "IPv6 address other nodes use to reach this node when the network enables IPv6 (default: the interface's IPv6 address)")
	f.StringVar(&cfg.NodeName, "node-name", "", "stable node identity kept in the lease, so the subnet survives an IP change; must be unique (default: none, the public IP identifies the node)")
	f.StringVar(&cfg.SubnetFile, "subnet-file", cfg.SubnetFile, "file the subnet and MTU are written to")
	f.DurationVar(&cfg.SubnetLeaseTTL, "subnet-lease-ttl", cfg.SubnetLeaseTTL, "lease lifetime; renewed with etcd keepalive")
	f.BoolVar(&cfg.IPMasq, "ip-masq", false, "masquerade traffic from the pod network to destinations outside it")
	f.BoolVar(&cfg.ForwardRules, "iptables-forward-rules", cfg.ForwardRules, "accept the pod network in iptables' FORWARD chain, so a DROP policy (Docker's) does not drop pod traffic")
	f.StringVar(&cfg.HealthzIP, "healthz-ip", cfg.HealthzIP, "address of the /healthz, /readyz and /metrics server")
	f.IntVar(&cfg.HealthzPort, "healthz-port", 0, "port of the health server (0 disables it)")
	f.IntVar(&cfg.MetricsPort, "metrics-port", 0, "separate port for /metrics (0: only on the health port)")
	f.StringVar(&neighMode, "neigh-mode", neighMode, "proactive (program every peer) or on-demand (answer kernel misses only)")
	f.StringVar(&cfg.CNIConfDir, "cni-conf-dir", "", "install the CNI conflist here once subnet.env exists (empty: do not install)")
	f.StringVar(&cfg.CNIConfSource, "cni-conf-source", "", "conflist file to install (default: the built-in weft+portmap conflist)")
	f.DurationVar(&cfg.ResyncInterval, "resync-interval", cfg.ResyncInterval, "period of the datapath's list-and-diff reconcile")
	return cmd
}

// newAgent resolves the underlay and gives the agent its production
// dependencies: the etcd store, the VXLAN datapath over nl and nftables in
// the current network namespace.
// underlaySettle bounds the wait for duplicate address detection on the
// underlay's IPv6 addresses (one solicitation and a random delay: about 2 s
// with the kernel's defaults).
const underlaySettle = 5 * time.Second

func newAgent(ctx context.Context, cfg agent.Config, store agent.Leases, nl *host.NS, metrics *agent.Metrics, log *slog.Logger) (*agent.Agent, error) {
	// Started at boot, the agent may come before duplicate address detection
	// has finished on the underlay's IPv6 address: wait a little for it.
	ul, err := underlay.FindSettled(ctx, nl, cfg.UnderlayOptions(), underlaySettle, log)
	if err != nil {
		return nil, fmt.Errorf("choose underlay interface: %w", err)
	}
	return agent.New(cfg, agent.Deps{
		Leases:      store,
		NewDatapath: newDatapath(nl, log.With("component", "vxlan")),
		Masq:        agent.NewNftables(nl, log),
		Underlay:    ul,
		Log:         log,
		Metrics:     metrics,
	})
}

// newDatapath builds the VXLAN datapath over nl once the agent knows the
// network config.
func newDatapath(nl host.Host, log *slog.Logger) func(backend.Config) (agent.Datapath, error) {
	return func(c backend.Config) (agent.Datapath, error) {
		v, err := backend.New(nl, c, log)
		if err != nil {
			return nil, err
		}
		return v, nil
	}
}
