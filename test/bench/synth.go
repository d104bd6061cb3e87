package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// synthLease is a peer that exists only in etcd: a flannel-format lease with
// a PublicIP outside the lab's switch (198.18.1.1 onwards, inside the
// benchmarking range), so nothing is ever sent to a real host.
type synthLease struct {
	Subnet   netip.Prefix
	PublicIP netip.Addr
	MAC      net.HardwareAddr
}

// gw is the peer's flannel.1 address (the subnet's .0).
func (s synthLease) gw() netip.Addr { return s.Subnet.Addr() }

// key is <prefix>/subnets/10.1.2.0-24.
func (s synthLease) key(prefix string) string {
	return prefix + "/subnets/" + s.Subnet.Addr().String() + "-" + strconv.Itoa(s.Subnet.Bits())
}

// value is exactly what flanneld writes for a vxlan lease.
func (s synthLease) value() string {
	return fmt.Sprintf(`{"PublicIP":%q,"PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":%q}}`,
		s.PublicIP.String(), s.MAC.String())
}

// synthLeases returns n leases of length bits inside network, starting at the
// second block (flannel's default SubnetMin) and skipping the taken ones.
func synthLeases(network netip.Prefix, bits, n int, taken []netip.Prefix) ([]synthLease, error) {
	base := binary.BigEndian.Uint32(network.Masked().Addr().AsSlice())
	blocks := uint32(1) << (bits - network.Bits())
	step := uint32(1) << (32 - bits)
	pub := binary.BigEndian.Uint32(netip.MustParseAddr("198.18.1.1").AsSlice())
	out := make([]synthLease, 0, n)
	for b := uint32(1); b < blocks-1 && len(out) < n; b++ {
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], base+b*step)
		p := netip.PrefixFrom(netip.AddrFrom4(a), bits)
		if overlapsAny(p, taken) {
			continue
		}
		i := uint32(len(out))
		var ip [4]byte
		binary.BigEndian.PutUint32(ip[:], pub+i)
		mac := net.HardwareAddr{0x0a, 0x00, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
		out = append(out, synthLease{Subnet: p, PublicIP: netip.AddrFrom4(ip), MAC: mac})
	}
	if len(out) < n {
		return nil, fmt.Errorf("only %d free /%d blocks in %s, want %d", len(out), bits, network, n)
	}
	return out, nil
}

func overlapsAny(p netip.Prefix, ps []netip.Prefix) bool {
	for _, q := range ps {
		if p.Overlaps(q) {
			return true
		}
	}
	return false
}

// takenSubnets lists the subnets already leased under prefix (the real nodes').
func takenSubnets(ctx context.Context, cli *clientv3.Client, prefix string) ([]netip.Prefix, error) {
	resp, err := cli.Get(ctx, prefix+"/subnets/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	var out []netip.Prefix
	for _, kv := range resp.Kvs {
		name := strings.TrimPrefix(string(kv.Key), prefix+"/subnets/")
		a, bits, _ := strings.Cut(strings.SplitN(name, "&", 2)[0], "-")
		if p, err := netip.ParsePrefix(a + "/" + bits); err == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// grantLease grants the etcd lease the synthetic keys are attached to.
func grantLease(ctx context.Context, cli *clientv3.Client, ttl time.Duration) (clientv3.LeaseID, error) {
	g, err := cli.Grant(ctx, int64(ttl.Seconds()))
	if err != nil {
		return 0, fmt.Errorf("grant etcd lease: %w", err)
	}
	return g.ID, nil
}

// putOne writes one lease (a plain put, as flannel's create txn would land).
func putOne(ctx context.Context, cli *clientv3.Client, prefix string, id clientv3.LeaseID, s synthLease) error {
	if _, err := cli.Put(ctx, s.key(prefix), s.value(), clientv3.WithLease(id)); err != nil {
		return fmt.Errorf("put %s: %w", s.key(prefix), err)
	}
	return nil
}

// txnWrite is how a batch of leases went into etcd.
type txnWrite struct {
	Txns   int           // transactions committed
	PerTxn int           // ops per transaction
	Start  time.Time     // the first (successful) txn was sent
	Took   time.Duration // Start → last txn committed
}

// maxTxnOps is etcd's default --max-txn-ops (the embedded server keeps it).
const maxTxnOps = 128

// putAll writes every lease in one transaction; when the server refuses that
// many operations (ErrTooManyOps) it writes them in as few transactions as
// the default limit allows, back to back.
func putAll(ctx context.Context, cli *clientv3.Client, prefix string, id clientv3.LeaseID, ls []synthLease) (txnWrite, error) {
	start := time.Now()
	err := putTxn(ctx, cli, prefix, id, ls)
	if err == nil {
		return txnWrite{Txns: 1, PerTxn: len(ls), Start: start, Took: time.Since(start)}, nil
	}
	if !errors.Is(err, rpctypes.ErrTooManyOps) {
		return txnWrite{}, err
	}
	// Refused before anything was applied: start the clock again.
	start = time.Now()
	w := txnWrite{PerTxn: maxTxnOps, Start: start}
	for i := 0; i < len(ls); i += maxTxnOps {
		if err := putTxn(ctx, cli, prefix, id, ls[i:min(i+maxTxnOps, len(ls))]); err != nil {
			return w, err
		}
		w.Txns++
	}
	w.Took = time.Since(start)
	return w, nil
}

func putTxn(ctx context.Context, cli *clientv3.Client, prefix string, id clientv3.LeaseID, ls []synthLease) error {
	ops := make([]clientv3.Op, len(ls))
	for i, s := range ls {
		ops[i] = clientv3.OpPut(s.key(prefix), s.value(), clientv3.WithLease(id))
	}
	if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("txn of %d puts: %w", len(ops), err)
	}
	return nil
}
