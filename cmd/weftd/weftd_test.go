package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
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
	return executeWithin(t, 30*time.Second, args...)
}

// executeWithin is execute with the command's context ending after limit.
func executeWithin(t *testing.T, limit time.Duration, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(t.Context(), limit)
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
	if len(rows) != 3 || rows[0].Subnet != "10.244.2.0/24" || rows[1].Subnet != "10.244.9.0/24" ||
		rows[2].Key != "/coreos.com/network/subnets/10.244.3.0-24" || rows[2].Corrupt == "" {
		t.Fatalf("rows = %+v, want 10.244.2.0/24, 10.244.9.0/24, then the corrupt 10.244.3.0-24", rows)
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

// The one-shot commands against an etcd they cannot talk to: a non-zero exit
// within 10 s, with an error naming the endpoint and the likely cause (not
// just "context deadline exceeded", and no hang).
func TestCommandsFailFastNamingTheCause(t *testing.T) {
	plain := etcdtest.Start(t)[0]
	tlsEp, certs := etcdtest.StartTLS(t, true)
	other := etcdtest.WriteCerts(t, t.TempDir()) // a CA that did not sign the server
	closed := "http://" + etcdtest.FreeAddr(t)
	for _, tc := range []struct {
		name  string
		flags []string
		want  []string
	}{
		{"refused", []string{"--etcd-endpoints", closed}, []string{closed, "connection refused"}},
		{"wrong CA", []string{"--etcd-endpoints", tlsEp[0], "--etcd-cafile", other.CAFile, "--etcd-certfile", certs.CertFile, "--etcd-keyfile", certs.KeyFile},
			[]string{tlsEp[0], "certificate signed by unknown authority"}},
		{"https to a plain server", []string{"--etcd-endpoints", strings.Replace(plain, "http://", "https://", 1), "--etcd-cafile", certs.CAFile},
			[]string{"does not speak TLS"}},
		{"http to a TLS server", []string{"--etcd-endpoints", strings.Replace(tlsEp[0], "https://", "http://", 1)},
			[]string{"server speaks TLS"}},
		{"no client certificate", []string{"--etcd-endpoints", tlsEp[0], "--etcd-cafile", certs.CAFile},
			[]string{"certificate required"}},
	} {
		for _, command := range [][]string{{"subnets"}, {"init-network", "--network", "10.244.0.0/16"}} {
			t.Run(tc.name+"/"+command[0], func(t *testing.T) {
				t.Parallel() // each waits for its deadline
				start := time.Now()
				_, err := executeWithin(t, 15*time.Second, append(command, tc.flags...)...)
				took := time.Since(start)
				if err == nil {
					t.Fatal("no error")
				}
				if took >= 10*time.Second {
					t.Errorf("failed after %s, want within 10s: %v", took.Round(time.Millisecond), err)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error does not name %q: %v", w, err)
					}
				}
				t.Logf("after %s: weftd: %v", took.Round(time.Millisecond), err)
			})
		}
	}
}

// weftd subnets shows the keys agents skip, with why and how many, in the
// table and in -o json, besides the valid leases.
func TestSubnetsShowsCorruptKeys(t *testing.T) {
	endpoints := etcdtest.Start(t)
	ep := endpoints[0]
	if _, err := execute(t, "init-network", "--etcd-endpoints", ep, "--network", "10.244.0.0/16"); err != nil {
		t.Fatal(err)
	}
	cli := etcdtest.Client(t, endpoints)
	dir := "/coreos.com/network/subnets/"
	mustPut(t, cli, dir+"10.244.9.0-24",
		`{"PublicIP":"198.18.0.9","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:09"},"NodeName":"n9"}`)
	mustPut(t, cli, dir+"10.244.3.0-24", `garbage`)
	mustPut(t, cli, dir+"not-a-subnet", `{}`)
	mustPut(t, cli, dir+"10.244.4.0-24", `{"PublicIP":"198.18.0.4","PublicIPv6":null,"BackendType":"host-gw"}`)

	out, err := execute(t, "subnets", "-o", "json", "--etcd-endpoints", ep)
	if err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	corrupt := map[string]string{}
	for _, r := range rows {
		if c, _ := r["corrupt"].(string); c != "" {
			key, _ := r["key"].(string)
			corrupt[key] = c
		} else if r["subnet"] != "10.244.9.0/24" {
			t.Errorf("unexpected valid row %v", r)
		}
	}
	for _, k := range []string{"10.244.3.0-24", "not-a-subnet", "10.244.4.0-24"} {
		if corrupt[dir+k] == "" {
			t.Errorf("-o json: no corrupt row for %s:\n%s", k, out)
		}
	}
	if !strings.Contains(corrupt[dir+"10.244.4.0-24"], "another backend") {
		t.Errorf("host-gw lease: corrupt = %q, want it to say another backend", corrupt[dir+"10.244.4.0-24"])
	}
	table, err := execute(t, "subnets", "--etcd-endpoints", ep)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table, "3 corrupt keys") || !strings.Contains(table, dir+"not-a-subnet") ||
		!strings.Contains(table, dir+"10.244.3.0-24") || !strings.Contains(table, "10.244.9.0/24") {
		t.Errorf("table does not show the valid lease and the 3 corrupt keys:\n%s", table)
	}
	t.Logf("weftd subnets:\n%s", table)
}

// init-network with an invalid config says "invalid network config" once,
// as main prints it (main.go: "weftd: <error>").
func TestInitNetworkErrorSaysItOnce(t *testing.T) {
	file := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(file, []byte(`{"Network":"10.244.0.0/16","SubnetLen":31}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"init-network", "--network", "10.244.0.0/33"},
		{"init-network", "--file", file},
	} {
		out := runMain(t, append(args, "--etcd-endpoints", "http://"+etcdtest.FreeAddr(t))...)
		if n := strings.Count(out, "invalid network config"); n != 1 || !strings.HasPrefix(out, "weftd: ") {
			t.Errorf("%v printed %q: want one \"invalid network config\"", args, out)
		}
	}
}

// runMain runs main's run() with args and returns what it printed on stderr.
func runMain(t *testing.T, args ...string) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	code := run(t.Context(), args)
	os.Stderr = saved
	_ = w.Close()
	b, _ := io.ReadAll(r)
	_ = r.Close()
	if code == 0 {
		t.Errorf("%v: exit code 0", args)
	}
	return strings.TrimSpace(string(b))
}
