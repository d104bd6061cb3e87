package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/test/nettest"
)

// TestEmbeddedEtcdDefault: `weftd run` without --etcd-endpoints starts its own
// single-node etcd in --data-dir, waits for the network config, and comes up
// once `weftd init-network` writes it; a restart reuses the data and the subnet.
func TestEmbeddedEtcdDefault(t *testing.T) {
	nettest.Privileged(t)
	node, peer := nettest.NewNS(t, "wemb"), nettest.NewNS(t, "wembp")
	nettest.Veth(t, node, "eth0", "198.18.0.1/24", peer, "eth0", "198.18.0.2/24")
	dir := t.TempDir()
	subnetFile := filepath.Join(dir, "subnet.env")
	start := func() *exec.Cmd {
		cmd := exec.Command("ip", "netns", "exec", node.Name, filepath.Join(binDir, "weftd"), "run",
			"--data-dir", filepath.Join(dir, "etcd"), "--iface", "eth0", "--node-name", "solo",
			"--subnet-file", subnetFile)
		log, err := os.Create(filepath.Join(dir, "weftd.log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stopProc(cmd) })
		return cmd
	}
	weftd := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		full := append([]string{"netns", "exec", node.Name, filepath.Join(binDir, "weftd")}, args...)
		out, err := exec.CommandContext(ctx, "ip", full...).CombinedOutput()
		if err != nil {
			t.Fatalf("weftd %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	waitSubnetEnv := func() lease.SubnetEnv {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if env, err := lease.ReadSubnetEnv(subnetFile); err == nil {
				return env
			}
			time.Sleep(50 * time.Millisecond)
		}
		log, _ := os.ReadFile(filepath.Join(dir, "weftd.log"))
		t.Fatalf("no subnet.env within 20s; log:\n%s", log)
		return lease.SubnetEnv{}
	}

	cmd := start()
	time.Sleep(time.Second) // the agent waits for the config; the embedded etcd is up
	if _, err := os.Stat(subnetFile); err == nil {
		t.Fatal("subnet.env written before any network config existed")
	}
	weftd("init-network", "--etcd-endpoints", "http://127.0.0.1:2379", "--network", "10.244.0.0/16")
	first := waitSubnetEnv()
	if out := weftd("subnets", "--etcd-endpoints", "http://127.0.0.1:2379"); !strings.Contains(out, first.Subnet.Masked().String()) {
		t.Fatalf("subnets does not list %s:\n%s", first.Subnet.Masked(), out)
	}
	stopProc(cmd)
	if err := os.Remove(subnetFile); err != nil {
		t.Fatal(err)
	}
	start()
	if again := waitSubnetEnv(); again.Subnet != first.Subnet {
		t.Fatalf("after a restart on the same data dir: subnet %s, want %s", again.Subnet, first.Subnet)
	}
}

// stopProc ends a process we started (SIGTERM, then SIGKILL) and reaps it.
func stopProc(cmd *exec.Cmd) {
	if cmd.Process == nil || cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}
