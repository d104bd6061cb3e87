package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lease/etcdstore/etcdtest"
)

// execute runs the weftd command tree with args and returns stdout.
func execute(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	if errOut.Len() > 0 {
		t.Logf("stderr: %s", errOut.String())
	}
	return out.String(), err
}

func TestBindEnv(t *testing.T) {
	var file string
	var ifaces []string
	var ttl time.Duration
	var masq bool
	cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
	cmd.Flags().StringVar(&file, "subnet-file", "default", "")
	cmd.Flags().StringSliceVar(&ifaces, "iface", nil, "")
	cmd.Flags().DurationVar(&ttl, "subnet-lease-ttl", time.Hour, "")
	cmd.Flags().BoolVar(&masq, "ip-masq", false, "")
	t.Setenv("WEFT_SUBNET_FILE", "/from/env")
	t.Setenv("WEFT_IFACE", "eth0, 198.18.0.1")
	t.Setenv("WEFT_SUBNET_LEASE_TTL", "90s")
	t.Setenv("WEFT_IP_MASQ", "true")
	cmd.SetArgs([]string{"--subnet-file", "/from/flag"})
	if err := cmd.ParseFlags([]string{"--subnet-file", "/from/flag"}); err != nil {
		t.Fatal(err)
	}
	if err := bindEnv(cmd); err != nil {
		t.Fatal(err)
	}
	if file != "/from/flag" {
		t.Errorf("flag given on the command line was overridden by env: %q", file)
	}
	if strings.Join(ifaces, "|") != "eth0|198.18.0.1" || ttl != 90*time.Second || !masq {
		t.Errorf("env not applied: ifaces=%q ttl=%s masq=%v", ifaces, ttl, masq)
	}
	t.Setenv("WEFT_SUBNET_LEASE_TTL", "soon")
	if err := bindEnv(cmd); err == nil || !strings.Contains(err.Error(), "WEFT_SUBNET_LEASE_TTL") {
		t.Errorf("bad env value: err = %v, want one naming WEFT_SUBNET_LEASE_TTL", err)
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	_, err := execute(t, "run", "--neigh-mode", "lazy", "--etcd-endpoints", "http://127.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), "--neigh-mode") {
		t.Fatalf("err = %v, want one naming --neigh-mode", err)
	}
}

func TestVersion(t *testing.T) {
	out, err := execute(t, "version")
	if err != nil || !strings.HasPrefix(out, "weftd ") {
		t.Fatalf("version: %q, %v", out, err)
	}
}

// TestInitNetworkAndSubnets drives init-network and subnets against a real etcd,
// with leases written the way flannel writes them.
func TestInitNetworkAndSubnets(t *testing.T) {
	endpoints := etcdtest.Start(t)
	ep := strings.Join(endpoints, ",")
	if _, err := execute(t, "init-network", "--etcd-endpoints", ep, "--network", "10.244.0.0/33"); err == nil {
		t.Fatal("init-network accepted an invalid network")
	}
	out, err := execute(t, "init-network", "--etcd-endpoints", ep, "--network", "10.244.0.0/16")
	if err != nil || !strings.Contains(out, "/coreos.com/network/config") {
		t.Fatalf("init-network: %q, %v", out, err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := t.Context()
	grant, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	flannelValue := `{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}`
	mustPut(t, cli, "/coreos.com/network/subnets/10.244.2.0-24", flannelValue, clientv3.WithLease(grant.ID))
	mustPut(t, cli, "/coreos.com/network/subnets/10.244.9.0-24",
		`{"PublicIP":"198.18.0.9","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:09"},"NodeName":"n9"}`)
	mustPut(t, cli, "/coreos.com/network/subnets/10.244.3.0-24", `garbage`)

	out, err = execute(t, "subnets", "-o", "json", "--etcd-endpoints", ep)
	if err != nil {
		t.Fatalf("subnets: %v", err)
	}
	var rows []subnetRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("subnets -o json: %v\n%s", err, out)
	}
	if len(rows) != 2 || rows[0].Subnet != "10.244.2.0/24" || rows[1].Subnet != "10.244.9.0/24" {
		t.Fatalf("rows = %+v, want 10.244.2.0/24 and 10.244.9.0/24", rows)
	}
	if rows[0].Reservation || rows[0].TTLSeconds < 3500 || rows[0].VtepMAC != "c6:d2:32:6f:8f:44" {
		t.Errorf("leased row = %+v", rows[0])
	}
	if !rows[1].Reservation || rows[1].Node != "n9" || rows[1].TTLSeconds != -1 {
		t.Errorf("reservation row = %+v", rows[1])
	}
	table, err := execute(t, "subnets", "--etcd-endpoints", ep)
	if err != nil || !strings.Contains(table, "10.244.9.0/24") || !strings.Contains(table, "yes") {
		t.Errorf("subnets table: %v\n%s", err, table)
	}
	if path, err := exec.LookPath("etcdctl"); err == nil {
		checkEtcdctl(t, path, endpoints[0])
	}
}

// checkEtcdctl runs the README's inspection command against the same etcd.
func checkEtcdctl(t *testing.T, etcdctl, endpoint string) {
	cmd := exec.Command(etcdctl, "--endpoints", endpoint, "get", "--prefix", "/coreos.com/network/subnets")
	cmd.Env = append(cmd.Environ(), "ETCDCTL_API=3")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "/coreos.com/network/subnets/10.244.2.0-24") ||
		!strings.Contains(string(out), `"VtepMAC":"c6:d2:32:6f:8f:44"`) {
		t.Errorf("etcdctl get --prefix: %v\n%s", err, out)
	}
}

func mustPut(t *testing.T, cli *clientv3.Client, k, v string, opts ...clientv3.OpOption) {
	t.Helper()
	if _, err := cli.Put(t.Context(), k, v, opts...); err != nil {
		t.Fatalf("put %s: %v", k, err)
	}
}
