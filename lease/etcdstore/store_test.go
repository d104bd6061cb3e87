package etcdstore_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/lease/etcdstore"
	"github.com/weftnet/weft/lease/etcdstore/etcdtest"
)

// flannelValue is a lease value exactly as flannel v0.28 writes it.
const flannelValue = `{"PublicIP":"198.18.0.7","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`

func TestGoldenLeaseValue(t *testing.T) {
	eachEtcd(t, func(t *testing.T, eps []string) {
		cli, s := setup(t, eps, testConfig)
		l, err := acquire(tctx(t), s, req("198.18.0.2", ""))
		if err != nil {
			t.Fatal(err)
		}
		val, _, _ := rawKV(t, cli, subnetKey(l))
		const prefix = `{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"`
		if !strings.HasPrefix(val, prefix) || val != prefix+`0a:58:c6:12:00:02"}}` {
			t.Fatalf("raw value %s", val)
		}
		// A flannel node's lease, written the way flannel writes it, parses.
		g, err := cli.Grant(tctx(t), 600)
		if err != nil {
			t.Fatal(err)
		}
		// Not our subnet (Acquire picks one at random): that would overwrite our lease.
		flannelKey := "10.244.99.0-24"
		if l.Key() == flannelKey {
			flannelKey = "10.244.98.0-24"
		}
		key := lease.DefaultPrefix + "/subnets/" + flannelKey
		if _, err := cli.Put(tctx(t), key, flannelValue, clientv3.WithLease(g.ID)); err != nil {
			t.Fatal(err)
		}
		all, err := s.List(tctx(t))
		if err != nil || len(all) != 2 {
			t.Fatalf("list %+v %v", all, err)
		}
		f := all[0]
		if f.Key() != flannelKey {
			f = all[1]
		}
		if f.Key() != flannelKey || f.Attrs.PublicIP.String() != "198.18.0.7" || f.Attrs.BackendData.VtepMAC.String() != "c6:d2:32:6f:8f:44" ||
			f.LeaseID != int64(g.ID) || f.Reservation || !f.Expiration.IsZero() {
			t.Fatalf("flannel lease parsed as %+v", f)
		}
	})
}

func TestNetworkConfigMissingAndPutConfig(t *testing.T) {
	cli := etcdtest.Client(t, startEmbedded(t))
	logs := &syncBuffer{}
	s := etcdstore.New(cli, "/weft-test", slogText(logs))
	_, err := s.NetworkConfig(tctx(t))
	if !errors.Is(err, lease.ErrNoConfig) || !strings.Contains(err.Error(), "/weft-test/config") || !strings.Contains(err.Error(), "etcdctl put") {
		t.Fatalf("missing config: %v", err)
	}
	if _, err := acquire(tctx(t), s, req("198.18.0.2", "")); !errors.Is(err, lease.ErrNoConfig) {
		t.Fatalf("acquire without config: %v", err)
	}
	if err := s.PutConfig(tctx(t), []byte(`{"Network":"10.244.0.0/16","SubnetLen":31}`)); err == nil {
		t.Fatal("invalid config accepted")
	}
	if _, _, ok := rawKV(t, cli, "/weft-test/config"); ok {
		t.Fatal("invalid config was written")
	}
	raw := `{"Network":"10.244.0.0/16"}`
	if err := s.PutConfig(tctx(t), []byte(raw)); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := rawKV(t, cli, "/weft-test/config"); v != raw {
		t.Fatalf("stored %q, want the raw %q", v, raw)
	}
	n, err := s.NetworkConfig(tctx(t))
	if err != nil || n.Backend.Type != "vxlan" || n.TotalBlocks() != 255 {
		t.Fatalf("config %+v %v", n, err)
	}
	if !strings.Contains(logs.String(), "using vxlan") {
		t.Errorf("backend default not logged:\n%s", logs.String())
	}
}

func TestObserverSeesOperations(t *testing.T) {
	var mu sync.Mutex
	ops := map[string]int{}
	cli := etcdtest.Client(t, startEmbedded(t))
	s := etcdstore.New(cli, "", nil, etcdstore.WithObserver(func(op string, d time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		if d > 0 && err == nil {
			ops[op]++
		}
	}))
	if err := s.PutConfig(tctx(t), []byte(testConfig)); err != nil {
		t.Fatal(err)
	}
	if _, err := acquire(tctx(t), s, req("198.18.0.2", "")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, op := range []string{"put", "get", "grant", "txn"} {
		if ops[op] == 0 {
			t.Errorf("no successful %q observed: %v", op, ops)
		}
	}
}

func TestTLS(t *testing.T) {
	for _, required := range []bool{true, false} {
		name := map[bool]string{true: "client-cert", false: "ca-only"}[required]
		t.Run(name, func(t *testing.T) {
			eps, certs := etcdtest.StartTLS(t, required)
			cc := etcdstore.ClientConfig{Endpoints: eps, CAFile: certs.CAFile, DialTimeout: 5 * time.Second}
			if required {
				cc.CertFile, cc.KeyFile = certs.CertFile, certs.KeyFile
			}
			cli, err := etcdstore.NewClient(cc)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cli.Close() })
			s := etcdstore.New(cli, "", nil)
			if err := s.PutConfig(tctx(t), []byte(testConfig)); err != nil {
				t.Fatalf("put over TLS: %v", err)
			}
			if _, err := acquire(tctx(t), s, req("198.18.0.2", "")); err != nil {
				t.Fatalf("acquire over TLS: %v", err)
			}
			if required { // without a client certificate the server refuses
				cc.CertFile, cc.KeyFile = "", ""
				expectFailure(t, cc)
			}
			// Plain http to the TLS server fails (and never silently works).
			plain := etcdstore.ClientConfig{Endpoints: []string{strings.Replace(eps[0], "https://", "http://", 1)}, DialTimeout: 2 * time.Second}
			expectFailure(t, plain)
		})
	}
}

func expectFailure(t *testing.T, cc etcdstore.ClientConfig) {
	t.Helper()
	cli, err := etcdstore.NewClient(cc)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(tctx(t), 3*time.Second)
	defer cancel()
	_, err = etcdstore.New(cli, "", nil).NetworkConfig(ctx)
	if err == nil || errors.Is(err, lease.ErrNoConfig) || !strings.Contains(err.Error(), cc.Endpoints[0]) {
		t.Fatalf("%+v: read succeeded or wrong error: %v", cc, err)
	} else {
		t.Logf("refused as expected: %v", err)
	}
}

func TestNewClientRefusesSchemeMismatch(t *testing.T) {
	dir := t.TempDir()
	certs := etcdtest.WriteCerts(t, dir)
	for _, tc := range []struct {
		name string
		cc   etcdstore.ClientConfig
	}{
		{"https without CA", etcdstore.ClientConfig{Endpoints: []string{"https://127.0.0.1:2379"}}},
		{"http with CA", etcdstore.ClientConfig{Endpoints: []string{"http://127.0.0.1:2379"}, CAFile: certs.CAFile}},
		{"http with cert", etcdstore.ClientConfig{Endpoints: []string{"http://127.0.0.1:2379"}, CertFile: certs.CertFile, KeyFile: certs.KeyFile}},
	} {
		if _, err := etcdstore.NewClient(tc.cc); !errors.Is(err, etcdstore.ErrTLSMismatch) {
			t.Errorf("%s: %v, want ErrTLSMismatch", tc.name, err)
		}
	}
	for _, tc := range []etcdstore.ClientConfig{
		{},
		{Endpoints: []string{"127.0.0.1:2379"}},
		{Endpoints: []string{"https://127.0.0.1:2379"}, CAFile: certs.CAFile, CertFile: certs.CertFile},
		{Endpoints: []string{"https://127.0.0.1:2379"}, CAFile: certs.CertFile + ".missing"},
		{Endpoints: []string{"http://127.0.0.1:2379"}, Username: "u"},
	} {
		if _, err := etcdstore.NewClient(tc); err == nil {
			t.Errorf("%+v: no error", tc)
		}
	}
}
