package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Etcd servers the lab can run in its etcd namespace.
const (
	EtcdEmbedded = "embedded" // weft-etcd: the etcd server weftd starts without endpoints
	EtcdDebian   = "debian"   // /usr/bin/etcd (Debian etcd-server 3.4)
)

// DebianEtcdPath is where the Debian package installs the server.
const DebianEtcdPath = "/usr/bin/etcd"

// HaveDebianEtcd reports whether the Debian etcd server is installed.
func HaveDebianEtcd() bool {
	_, err := exec.LookPath(DebianEtcdPath)
	return err == nil
}

// etcdArgv is the command line of the chosen server; the data dir survives
// StopEtcd/StartEtcd, so a restarted server keeps the leases.
func (l *Lab) etcdArgv() []string {
	url := l.EtcdEndpoint()
	dir := filepath.Join(l.dir, "etcd-data")
	if l.opts.Etcd == EtcdDebian {
		// Alone in its namespace, the peer port can be fixed.
		peer := "http://127.0.0.1:2380"
		return []string{DebianEtcdPath, "--name", "lab", "--data-dir", dir,
			"--listen-client-urls", url, "--advertise-client-urls", url,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", "lab=" + peer, "--initial-cluster-state", "new",
			"--log-level", "warn", "--logger", "zap"}
	}
	return []string{filepath.Join(l.opts.BinDir, "weft-etcd"), "--data-dir", dir,
		"--client-url", url, "--log-format", "text"}
}

// EtcdEndpoint is the client URL the agents use: on the IPv4 address, or on
// the IPv6 one (http://[fd00:198:18::200]:2379) when the underlay is IPv6-only.
func (l *Lab) EtcdEndpoint() string {
	ip := EtcdIP
	if !l.opts.Underlay.Has4() {
		ip = EtcdIP6
	}
	return "http://" + net.JoinHostPort(ip.String(), "2379")
}

// StartEtcd starts the etcd server (again) and waits until it answers.
func (l *Lab) StartEtcd(ctx context.Context) error {
	p, err := l.startEtcdProc()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err = l.cli.Get(cctx, "health-probe")
		cancel()
		if err == nil {
			l.log.Info("etcd ready", "kind", l.opts.Etcd, "pid", p.PID(), "endpoint", l.EtcdEndpoint())
			return nil
		}
		if done, werr := p.exited(); done {
			return fmt.Errorf("etcd exited (%v) before it was ready:\n%s", werr, p.logTail(20))
		}
		if ctx.Err() != nil {
			return fmt.Errorf("wait for etcd: %w", ctx.Err())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd not ready after 20s: %w\n%s", err, p.logTail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (l *Lab) startEtcdProc() (*proc, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.etcd != nil {
		if done, _ := l.etcd.exited(); !done {
			return nil, errors.New("etcd is already running")
		}
	}
	p, err := startProc("etcd", l.etcdNS.Name, filepath.Join(l.dir, "etcd.log"), l.opts.Keep, l.etcdArgv()...)
	if err != nil {
		return nil, err
	}
	l.etcd = p
	return p, nil
}

// StopEtcd stops the etcd server (SIGTERM, SIGKILL after 10 s), keeping its
// data. weft's embedded server takes a while to stop while agents hold
// watches, hence the generous grace.
func (l *Lab) StopEtcd() error {
	l.mu.Lock()
	p := l.etcd
	l.mu.Unlock()
	if p == nil {
		return nil
	}
	start := time.Now()
	err := p.stop(10 * time.Second)
	l.log.Info("etcd stopped", "pid", p.PID(), "took", time.Since(start).Round(time.Millisecond))
	return err
}

// newEtcdClient returns a client whose connections are opened inside the
// etcd namespace, so the lab needs no route in the root namespace.
func (l *Lab) newEtcdClient() (*clientv3.Client, error) {
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		return l.etcdNS.DialContext(ctx, "tcp", addr)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{l.EtcdEndpoint()},
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{
			grpc.WithContextDialer(dial),
			// Reconnect quickly after StopEtcd/StartEtcd: gRPC's default backoff
			// grows to 120 s, which would make StartEtcd wait for the lab's own
			// client rather than for the server.
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
				MinConnectTimeout: time.Second,
			}),
		},
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return cli, nil
}

// Etcd is the lab's etcd client (for writing bad values, revoking leases...).
func (l *Lab) Etcd() *clientv3.Client { return l.cli }

// Prefix is the etcd prefix of the network ("/coreos.com/network").
func (l *Lab) Prefix() string { return l.opts.Prefix }

// writeNetworkConfig writes <prefix>/config as init-network would.
func (l *Lab) writeNetworkConfig(ctx context.Context) error {
	conf := l.NetworkConfig()
	if _, err := l.cli.Put(ctx, l.opts.Prefix+"/config", conf); err != nil {
		return fmt.Errorf("put %s/config: %w", l.opts.Prefix, err)
	}
	return nil
}

// LeaseKV is one key under <prefix>/subnets/, decoded where it can be.
type LeaseKV struct {
	Key     string
	Value   string
	LeaseID clientv3.LeaseID // 0 for a reservation
	// Decoded from the key and the flannel value; zero when malformed.
	// The IPv4 part is zero in an IPv6-only lease (key 0.0.0.0-0&...), the
	// IPv6 part without "&<ipv6>-<len>" in the key.
	Subnet     netip.Prefix
	PublicIP   netip.Addr
	VtepMAC    net.HardwareAddr
	Subnet6    netip.Prefix
	PublicIPv6 netip.Addr
	VtepMAC6   net.HardwareAddr // of BackendV6Data
	Err        error            // why the key or value did not decode
}

// flannelValue is the part of the lease value the lab reads.
type flannelValue struct {
	PublicIP      string
	PublicIPv6    *string
	BackendType   string
	BackendData   struct{ VtepMAC string }
	BackendV6Data struct{ VtepMAC string }
}

// Leases lists every key under <prefix>/subnets/, sorted by key.
func (l *Lab) Leases(ctx context.Context) ([]LeaseKV, error) {
	pfx := l.opts.Prefix + "/subnets/"
	resp, err := l.cli.Get(ctx, pfx, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", pfx, err)
	}
	out := make([]LeaseKV, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		lk := LeaseKV{Key: string(kv.Key), Value: string(kv.Value), LeaseID: clientv3.LeaseID(kv.Lease)}
		lk.Err = lk.decode(strings.TrimPrefix(lk.Key, pfx))
		out = append(out, lk)
	}
	slices.SortFunc(out, func(a, b LeaseKV) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

func (lk *LeaseKV) decode(key string) error {
	k4, k6, dual := strings.Cut(key, "&")
	p, err := parseKeyPart(k4)
	if err != nil || !p.Addr().Is4() {
		return fmt.Errorf("key %q: want <ipv4>-<len>[&<ipv6>-<len>]: %v", key, err)
	}
	ipv6Only := p == netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if !ipv6Only {
		lk.Subnet = p
	}
	if dual {
		if p, err = parseKeyPart(k6); err != nil || !p.Addr().Is6() {
			return fmt.Errorf("key %q: IPv6 part %q: want <ipv6>-<len>: %v", key, k6, err)
		}
		lk.Subnet6 = p
	} else if ipv6Only {
		return fmt.Errorf("key %q: neither an IPv4 nor an IPv6 subnet", key)
	}
	var v flannelValue
	if err := json.Unmarshal([]byte(lk.Value), &v); err != nil {
		return fmt.Errorf("value of %q: %w", key, err)
	}
	if lk.PublicIP, err = netip.ParseAddr(v.PublicIP); err != nil {
		return fmt.Errorf("PublicIP of %q: %w", key, err)
	}
	if lk.Subnet.IsValid() {
		if lk.VtepMAC, err = net.ParseMAC(v.BackendData.VtepMAC); err != nil {
			return fmt.Errorf("VtepMAC of %q: %w", key, err)
		}
	}
	if lk.Subnet6.IsValid() {
		if v.PublicIPv6 == nil {
			return fmt.Errorf("PublicIPv6 of %q: missing", key)
		}
		if lk.PublicIPv6, err = netip.ParseAddr(*v.PublicIPv6); err != nil {
			return fmt.Errorf("PublicIPv6 of %q: %w", key, err)
		}
		if lk.VtepMAC6, err = net.ParseMAC(v.BackendV6Data.VtepMAC); err != nil {
			return fmt.Errorf("BackendV6Data VtepMAC of %q: %w", key, err)
		}
	}
	return nil
}

// parseKeyPart parses "<ip>-<len>" and wants it masked.
func parseKeyPart(s string) (netip.Prefix, error) {
	a, bits, ok := strings.Cut(s, "-")
	if !ok {
		return netip.Prefix{}, fmt.Errorf("%q has no -<len>", s)
	}
	p, err := netip.ParsePrefix(a + "/" + bits)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("%q is not masked", s)
	}
	return p, nil
}

// RevokeLease revokes the etcd lease of node's subnet key (the key goes with
// it), as an expired lease would.
func (l *Lab) RevokeLease(ctx context.Context, n *Node) (LeaseKV, error) {
	lk, err := n.Lease(ctx)
	if err != nil {
		return LeaseKV{}, err
	}
	if lk.LeaseID == 0 {
		return lk, fmt.Errorf("%s: %s is a reservation (no etcd lease)", n.Name, lk.Key)
	}
	if _, err := l.cli.Revoke(ctx, lk.LeaseID); err != nil {
		return lk, fmt.Errorf("revoke lease %x of %s: %w", int64(lk.LeaseID), lk.Key, err)
	}
	return lk, nil
}
