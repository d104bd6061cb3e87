package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/lease/etcdstore"
)

// etcdFlags are flannel's etcd flags plus those of the single-node etcd
// weftd starts without endpoints.
type etcdFlags struct {
	endpoints []string
	prefix    string
	keyFile   string
	certFile  string
	caFile    string
	username  string
	password  string
	dataDir   string
	listen    string
}

// defaultEmbeddedURL is where the single-node etcd weftd starts listens.
const defaultEmbeddedURL = "http://127.0.0.1:2379"

func (e *etcdFlags) register(f *pflag.FlagSet) {
	f.StringSliceVar(&e.endpoints, "etcd-endpoints", nil, "etcd endpoints (comma-separated); empty: start an embedded single-node etcd")
	f.StringVar(&e.prefix, "etcd-prefix", lease.DefaultPrefix, "etcd prefix of the network config and leases")
	f.StringVar(&e.keyFile, "etcd-keyfile", "", "client key for etcd TLS")
	f.StringVar(&e.certFile, "etcd-certfile", "", "client certificate for etcd TLS")
	f.StringVar(&e.caFile, "etcd-cafile", "", "CA bundle that signed the etcd server certificate")
	f.StringVar(&e.username, "etcd-username", "", "etcd user")
	f.StringVar(&e.password, "etcd-password", "", "etcd password")
	f.StringVar(&e.dataDir, "data-dir", "/var/lib/weft/etcd", "data directory of the single-node etcd started without --etcd-endpoints")
	f.StringVar(&e.listen, "embedded-etcd-url", defaultEmbeddedURL, "client URL of the single-node etcd started without --etcd-endpoints")
}

// etcdConn is weftd's connection to etcd and, without --etcd-endpoints, the
// weft-etcd process it started.
type etcdConn struct {
	store   *etcdstore.Store
	child   *etcdChild // nil with --etcd-endpoints
	closers []func()
}

// Close stops the health prober, closes the client, then stops the child etcd.
func (c *etcdConn) Close() {
	for _, f := range slices.Backward(c.closers) {
		f()
	}
}

// childExited is closed if the etcd weftd started exits; nil (never ready)
// with --etcd-endpoints.
func (c *etcdConn) childExited() <-chan struct{} {
	if c.child == nil {
		return nil
	}
	return c.child.exited
}

// etcdHooks connect the store to the agent's metrics. Both may be nil.
type etcdHooks struct {
	// observe gets the latency and result of every etcd operation.
	observe func(op string, d time.Duration, err error)
	// health gets etcd's reachability on each change. With it, openEtcd runs
	// the store's health prober (Monitor) and the store logs the changes:
	// that is `weftd run`. Without it (one-shot commands) the store stays
	// quiet and the command's error says what failed.
	health func(up bool, err error)
}

// openEtcd connects to etcd, first starting weft-etcd on --data-dir and
// --embedded-etcd-url when no endpoints are given. Its logs go to stderr, in
// weftd's --log-format.
func (g *globalFlags) openEtcd(ctx context.Context, log *slog.Logger, stderr io.Writer, hooks etcdHooks) (*etcdConn, error) {
	e := &g.etcd
	c := &etcdConn{}
	endpoints := e.endpoints
	if len(endpoints) == 0 {
		child, err := startEtcdChild(ctx, log, stderr, "--data-dir", e.dataDir, "--client-url", e.listen, "--log-format", g.logFormat)
		if err != nil {
			return nil, fmt.Errorf("start etcd: %w", err)
		}
		c.child = child
		c.closers = append(c.closers, func() { child.stop(log) })
		endpoints = child.endpoints
	}
	cli, err := etcdstore.NewClient(etcdstore.ClientConfig{
		Endpoints: endpoints, CertFile: e.certFile, KeyFile: e.keyFile, CAFile: e.caFile,
		Username: e.username, Password: e.password, DialTimeout: 5 * time.Second,
	})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("connect to etcd: %w", err)
	}
	c.closers = append(c.closers, func() { _ = cli.Close() })
	opts := []etcdstore.Option{etcdstore.WithHealthLog(hooks.health != nil)}
	if hooks.observe != nil {
		opts = append(opts, etcdstore.WithObserver(hooks.observe))
	}
	if hooks.health != nil {
		opts = append(opts, etcdstore.WithHealth(hooks.health))
	}
	c.store = etcdstore.New(cli, e.prefix, log, opts...)
	if hooks.health != nil {
		mctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.store.Monitor(mctx)
		}()
		c.closers = append(c.closers, func() { cancel(); <-done })
	}
	return c, nil
}

func newInitNetworkCmd(g *globalFlags) *cobra.Command {
	var network, network6, file string
	var subnetLen, vni, port int
	var directRouting bool
	cmd := &cobra.Command{
		Use:   "init-network",
		Short: "Validate a network config and write it to <etcd-prefix>/config",
		Example: `  weftd init-network --network 10.244.0.0/16
  weftd init-network --network 10.244.0.0/16 --ipv6-network fc00::/48   # dual stack
  weftd init-network --ipv6-network fc00::/48                          # IPv6-only
  weftd init-network --file net-conf.json --etcd-endpoints https://etcd:2379 --etcd-cafile ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := netConfJSON(file, network, network6, subnetLen, vni, port, directRouting)
			if err != nil {
				return err
			}
			if _, err := lease.ParseNetwork(raw); err != nil {
				// lease's errors already say "invalid network config" or
				// "decode network config"; name the file they come from.
				if file != "" {
					return fmt.Errorf("%s: %w", file, err)
				}
				return err
			}
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			conn, err := g.openEtcd(cmd.Context(), log, cmd.ErrOrStderr(), etcdHooks{})
			if err != nil {
				return err
			}
			defer conn.Close()
			if err := conn.store.PutConfig(cmd.Context(), raw); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrote %s/config: %s\n", g.etcd.prefix, raw)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "file", "", "read the config JSON from this file (net-conf.json); exclusive with --network")
	f.StringVar(&network, "network", "", "pod network CIDR, e.g. 10.244.0.0/16")
	f.StringVar(&network6, "ipv6-network", "", "IPv6 pod network CIDR, e.g. fc00::/48: dual stack with --network, IPv6-only without")
	f.IntVar(&subnetLen, "subnet-len", 0, "per-node subnet length (default 24)")
	f.IntVar(&vni, "vni", 0, fmt.Sprintf("VXLAN VNI (default %d)", lease.DefaultVNI))
	f.IntVar(&port, "port", 0, fmt.Sprintf("VXLAN UDP port (default %d)", backend.DefaultPort))
	f.BoolVar(&directRouting, "direct-routing", false, "route directly to peers on the same L2 segment")
	return cmd
}
