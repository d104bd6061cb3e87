package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/subnetenv"
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
	waitSubnetEnv := func() subnetenv.SubnetEnv {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if env, err := subnetenv.ReadSubnetEnv(subnetFile); err == nil {
				return env
			}
			time.Sleep(50 * time.Millisecond)
		}
		log, _ := os.ReadFile(filepath.Join(dir, "weftd.log"))
		t.Fatalf("no subnet.env within 20s; log:\n%s", log)
		return subnetenv.SubnetEnv{}
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
	etcdPID := childEtcd(t, cmd.Process.Pid)
	stopProc(cmd)
	if isEtcdServer(etcdPID) {
		t.Fatalf("weft-etcd (pid %d) still runs after weftd stopped", etcdPID)
	}
	if err := os.Remove(subnetFile); err != nil {
		t.Fatal(err)
	}
	cmd = start()
	if again := waitSubnetEnv(); again.Subnet != first.Subnet {
		t.Fatalf("after a restart on the same data dir: subnet %s, want %s", again.Subnet, first.Subnet)
	}

	// The agent does not run on without its etcd: it exits with an error.
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := syscall.Kill(childEtcd(t, cmd.Process.Pid), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		log, _ := os.ReadFile(filepath.Join(dir, "weftd.log"))
		if err == nil || !strings.Contains(string(log), "weft-etcd exited") {
			t.Fatalf("weftd after its etcd was killed: exit %v, want an error naming weft-etcd; log:\n%s", err, log)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("weftd still runs 20s after its etcd was killed")
	}
}

// TestEmbeddedEtcdMissing: without --etcd-endpoints and without weft-etcd,
// weftd says what to do instead of waiting for an etcd that never comes.
func TestEmbeddedEtcdMissing(t *testing.T) {
	dir := t.TempDir()
	weftd := filepath.Join(dir, "weftd")
	data, err := os.ReadFile(filepath.Join(binDir, "weftd"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(weftd, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), weftd, "subnets", "--data-dir", filepath.Join(dir, "etcd"))
	cmd.Env = []string{"PATH=" + dir}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "weft-etcd") || !strings.Contains(string(out), "--etcd-endpoints") {
		t.Fatalf("weftd subnets with no etcd at all: %v, want an error naming weft-etcd and --etcd-endpoints:\n%s", err, out)
	}
}

// childEtcd returns the pid of the weft-etcd that the process pid started.
func childEtcd(t *testing.T, pid int) int {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread ended
		}
		for _, field := range strings.Fields(string(b)) {
			if child, err := strconv.Atoi(field); err == nil && isEtcdServer(child) {
				return child
			}
		}
	}
	t.Fatalf("process %d has no weft-etcd child", pid)
	return 0
}

// isEtcdServer reports whether pid is a live weft-etcd.
func isEtcdServer(pid int) bool {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie is not running: field 3 of stat (after "(comm) ") is its state.
	if i := strings.LastIndexByte(string(stat), ')'); i > 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
		return false
	}
	return strings.TrimSpace(string(comm)) == "weft-etcd"
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
