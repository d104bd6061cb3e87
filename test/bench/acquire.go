package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/lease/etcdstore"
	"github.com/weftnet/weft/lease/etcdstore/etcdserver"
)

// benchAcquire times 256 concurrent lease acquisitions (each node its own
// Store, one shared client) against one embedded etcd with fsync on, on a
// /12 Network with /24 blocks (4095 blocks, so nobody runs out).
func benchAcquire(ctx context.Context, env Env) ([]Row, error) {
	const nodes = 256
	dir, err := os.MkdirTemp("", "weft-bench-etcd-")
	if err != nil {
		return nil, fmt.Errorf("create etcd dir: %w", err)
	}
	defer os.RemoveAll(dir)
	e, err := etcdserver.Start(ctx, etcdserver.Config{Dir: dir})
	if err != nil {
		return nil, err
	}
	defer e.Close()
	cli, err := etcdstore.NewClient(etcdstore.ClientConfig{Endpoints: e.Endpoints()})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	if err := etcdstore.New(cli, "", nil).PutConfig(ctx, []byte(`{"Network":"10.0.0.0/12","SubnetLen":24,"Backend":{"Type":"vxlan"}}`)); err != nil {
		return nil, err
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		errs  []error
		seen  = map[netip.Prefix]bool{}
		start = time.Now()
	)
	for i := range nodes {
		wg.Go(func() {
			ip := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
			b := ip.As4()
			req := lease.Request{Attrs: lease.Attrs{PublicIP: ip, BackendType: "vxlan",
				BackendData: &lease.VXLANData{VNI: 1, VtepMAC: net.HardwareAddr{0x0a, 0x58, b[0], b[1], b[2], b[3]}}}}
			// As the agent does: read the config, then acquire under it.
			s := etcdstore.New(cli, "", nil)
			cfg, err := s.NetworkConfig(ctx)
			var l lease.Lease
			if err == nil {
				l, err = s.Acquire(ctx, cfg, req)
			}
			mu.Lock()
			defer mu.Unlock()
			if err == nil && seen[l.Subnet] {
				err = fmt.Errorf("subnet %s handed out twice", l.Subnet)
			}
			if err != nil {
				errs = append(errs, err)
				return
			}
			seen[l.Subnet] = true
		})
	}
	wg.Wait()
	took := time.Since(start)
	if len(errs) > 0 {
		return nil, fmt.Errorf("%d of %d acquisitions failed, first: %w", len(errs), nodes, errs[0])
	}
	how := fmt.Sprintf("%d concurrent Acquire on one embedded etcd (fsync on), /12 with SubnetLen 24, %d distinct subnets", nodes, len(seen))
	return []Row{
		{Figure: "acquire-256-total", Value: float64(took.Microseconds()) / 1000, Unit: "ms", How: how},
		{Figure: "acquire-256-rate", Value: nodes / took.Seconds(), Unit: "acquisitions/s", How: how},
	}, nil
}
