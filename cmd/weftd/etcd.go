package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/lease/etcdstore"
)

// etcdFlags are flannel's etcd flags plus the embedded server's.
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

// defaultEmbeddedURL is where the single-node embedded etcd listens.
const defaultEmbeddedURL = "http://127.0.0.1:2379"

func (e *etcdFlags) register(f *pflag.FlagSet) {
	f.StringSliceVar(&e.endpoints, "etcd-endpoints", nil, "etcd endpoints (comma-separated); empty: start an embedded single-node etcd")
	f.StringVar(&e.prefix, "etcd-prefix", lease.DefaultPrefix, "etcd prefix of the network config and leases")
	f.StringVar(&e.keyFile, "etcd-keyfile", "", "client key for etcd TLS")
	f.StringVar(&e.certFile, "etcd-certfile", "", "client certificate for etcd TLS")
	f.StringVar(&e.caFile, "etcd-cafile", "", "CA bundle that signed the etcd server certificate")
	f.StringVar(&e.username, "etcd-username", "", "etcd user")
	f.StringVar(&e.password, "etcd-password", "", "etcd password")
	f.StringVar(&e.dataDir, "data-dir", "/var/lib/weft/etcd", "data directory of the embedded etcd")
	f.StringVar(&e.listen, "embedded-etcd-url", defaultEmbeddedURL, "client URL of the embedded etcd")
}

// openStore connects to etcd (starting the embedded server when no endpoints
// are given) and returns the lease store and a function that closes everything.
func (e *etcdFlags) openStore(ctx context.Context, log *slog.Logger, observe func(string, time.Duration, error)) (*etcdstore.Store, func(), error) {
	st, _, closeAll, err := e.open(ctx, log, observe)
	return st, closeAll, err
}

// open is openStore that also returns the etcd client.
func (e *etcdFlags) open(ctx context.Context, log *slog.Logger, observe func(string, time.Duration, error)) (*etcdstore.Store, *clientv3.Client, func(), error) {
	endpoints := e.endpoints
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	if len(endpoints) == 0 {
		srv, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{
			Dir: e.dataDir, ClientURLs: []string{e.listen}, Logger: log,
		})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("start embedded etcd: %w", err)
		}
		closers = append(closers, func() { _ = srv.Close() })
		endpoints = srv.Endpoints()
		log.Info("started embedded etcd", "endpoints", endpoints, "data_dir", e.dataDir)
	}
	cli, err := etcdstore.NewClient(etcdstore.ClientConfig{
		Endpoints: endpoints, CertFile: e.certFile, KeyFile: e.keyFile, CAFile: e.caFile,
		Username: e.username, Password: e.password, DialTimeout: 5 * time.Second,
	})
	if err != nil {
		closeAll()
		return nil, nil, nil, fmt.Errorf("connect to etcd: %w", err)
	}
	closers = append(closers, func() { _ = cli.Close() })
	var opts []etcdstore.Option
	if observe != nil {
		opts = append(opts, etcdstore.WithObserver(observe))
	}
	return etcdstore.New(cli, e.prefix, log, opts...), cli, closeAll, nil
}

// newEtcdCmd runs weft's embedded etcd on its own (the lab and the demo use it
// as a separate process, like an external etcd).
func newEtcdCmd(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:    "etcd",
		Short:  "Run the embedded single-node etcd server on its own",
		Args:   cobra.NoArgs,
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			srv, err := etcdstore.StartEmbedded(cmd.Context(), etcdstore.EmbeddedConfig{
				Dir: g.etcd.dataDir, ClientURLs: []string{g.etcd.listen}, Logger: log,
			})
			if err != nil {
				return fmt.Errorf("start embedded etcd: %w", err)
			}
			log.Info("embedded etcd ready", "endpoints", srv.Endpoints())
			<-cmd.Context().Done()
			return srv.Close()
		},
	}
}

func newInitNetworkCmd(g *globalFlags) *cobra.Command {
	var network, file string
	var subnetLen, vni, port int
	var directRouting bool
	cmd := &cobra.Command{
		Use:   "init-network",
		Short: "Validate a network config and write it to <etcd-prefix>/config",
		Example: `  weftd init-network --network 10.244.0.0/16
  weftd init-network --file net-conf.json --etcd-endpoints https://etcd:2379 --etcd-cafile ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := netConfJSON(file, network, subnetLen, vni, port, directRouting)
			if err != nil {
				return err
			}
			if _, err := lease.ParseNetwork(raw); err != nil {
				return fmt.Errorf("invalid network config: %w", err)
			}
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			st, closeStore, err := g.etcd.openStore(cmd.Context(), log, nil)
			if err != nil {
				return err
			}
			defer closeStore()
			if err := st.PutConfig(cmd.Context(), raw); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrote %s/config: %s\n", g.etcd.prefix, raw)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "file", "", "read the config JSON from this file (net-conf.json); exclusive with --network")
	f.StringVar(&network, "network", "", "pod network CIDR, e.g. 10.244.0.0/16")
	f.IntVar(&subnetLen, "subnet-len", 0, "per-node subnet length (default 24)")
	f.IntVar(&vni, "vni", 0, "VXLAN VNI (default 1)")
	f.IntVar(&port, "port", 0, "VXLAN UDP port (default 8472)")
	f.BoolVar(&directRouting, "direct-routing", false, "route directly to peers on the same L2 segment")
	return cmd
}
