package etcdstore_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/lease/etcdstore"
	"github.com/weftnet/weft/lease/etcdstore/etcdtest"
	"github.com/weftnet/weft/test/testlog"
)

const testConfig = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`

// eachEtcd runs f against the embedded server and, when installed, the
// Debian etcd 3.4 binary.
func eachEtcd(t *testing.T, f func(t *testing.T, eps []string)) {
	t.Run("embedded", func(t *testing.T) { f(t, etcdtest.Start(t)) })
	t.Run("etcd-binary", func(t *testing.T) { f(t, etcdtest.StartBinary(t)) })
}

// setup returns a client and a store with the test config written.
func setup(t *testing.T, eps []string, config string, opts ...etcdstore.Option) (*clientv3.Client, *etcdstore.Store) {
	t.Helper()
	cli := etcdtest.Client(t, eps)
	s := etcdstore.New(cli, "", testLogger(t), opts...)
	if err := s.PutConfig(tctx(t), []byte(config)); err != nil {
		t.Fatal(err)
	}
	return cli, s
}

func testLogger(t *testing.T) *slog.Logger { return testlog.New(t, slog.LevelWarn) }

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func attrs(ip, name string) lease.Attrs {
	a := netip.MustParseAddr(ip).As4()
	return lease.Attrs{
		PublicIP:    netip.MustParseAddr(ip),
		BackendType: "vxlan",
		BackendData: &lease.VXLANData{VNI: 1, VtepMAC: net.HardwareAddr{0x0a, 0x58, a[0], a[1], a[2], a[3]}},
		NodeName:    name,
	}
}

// acquire reads s's network config and acquires under it, as the agent does.
func acquire(ctx context.Context, s *etcdstore.Store, r lease.Request) (lease.Lease, error) {
	cfg, err := s.NetworkConfig(ctx)
	if err != nil {
		return lease.Lease{}, err
	}
	return s.Acquire(ctx, cfg, r)
}

// testNetwork is testConfig parsed.
var testNetwork = func() *lease.Network {
	n, err := lease.ParseNetwork([]byte(testConfig))
	if err != nil {
		panic(err)
	}
	return n
}()

func req(ip, name string) lease.Request { return lease.Request{Attrs: attrs(ip, name), TTL: time.Hour} }

// rawKV reads a key straight from etcd.
func rawKV(t *testing.T, cli *clientv3.Client, key string) (value string, leaseID int64, ok bool) {
	t.Helper()
	resp, err := cli.Get(tctx(t), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, false
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].Lease, true
}

func subnetKey(l lease.Lease) string { return lease.DefaultPrefix + "/subnets/" + l.Key() }

// next receives one watch batch or fails after a generous wait.
func next(t *testing.T, ch <-chan []lease.Event) []lease.Event {
	t.Helper()
	select {
	case b, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return b
	case <-time.After(30 * time.Second):
		t.Fatal("no watch batch within 30s")
	}
	return nil
}

// collect receives batches until want events arrived and returns them as
// "type key" strings.
func collect(t *testing.T, ch <-chan []lease.Event, want int) []string {
	t.Helper()
	var got []string
	for len(got) < want {
		for _, ev := range next(t, ch) {
			got = append(got, ev.Type.String()+" "+ev.Lease.Key())
		}
	}
	return got
}

// quiet checks that no batch arrives for a short while (used after the
// expected events, to catch extra ones; not a timing assertion on speed).
func quiet(t *testing.T, ch <-chan []lease.Event, d time.Duration) {
	t.Helper()
	select {
	case b := <-ch:
		t.Fatalf("unexpected batch %+v", b)
	case <-time.After(d):
	}
}

func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func startEmbedded(t *testing.T) []string { return etcdtest.Start(t) }

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func slogText(w *syncBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// tctx is the context of one test step: generous, so that a hung etcd call
// fails the test instead of hanging the run.
func tctx(t *testing.T) context.Context { return withTimeout(t, 60*time.Second) }

// eachRestartable runs f against a restartable embedded server and, when
// installed, the Debian etcd binary; both start stopped.
func eachRestartable(t *testing.T, f func(t *testing.T, r *etcdtest.Restartable)) {
	t.Run("embedded", func(t *testing.T) { f(t, etcdtest.NewEmbedded(t)) })
	t.Run("etcd-binary", func(t *testing.T) { f(t, etcdtest.NewBinary(t)) })
}

// countLines counts the log lines containing every one of subs.
func countLines(out string, subs ...string) int {
	n := 0
	for line := range strings.Lines(out) {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}
