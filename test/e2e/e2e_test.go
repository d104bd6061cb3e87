package e2e

// Topology of every lab (package lab), nodes and pods as the scenarios use them:
//
//	                 <p>-sw: bridge br0, underlay 198.18.0.0/24
//	    ┌────────────────┬─────────────────┬─────────────────┬────────────────┐
//	    │                │                 │                 │                │
//	<p>-etcd         <p>-node1         <p>-node2         <p>-node3        <p>-out
//	198.18.0.200     198.18.0.1        198.18.0.2        198.18.0.3       198.18.0.250
//	weft-etcd   ◄─── weftd run ──────  weftd run ──────  weftd run        UDP listener,
//	(or Debian       flannel.1 ◄══════ VXLAN 8472 ══════► flannel.1        no route to
//	 etcd 3.4)       cni0 10.244.a.1   cni0 10.244.b.1   cni0 10.244.c.1  10.244.0.0/16
//	                  ├ pod1 .2         ├ pod1 .2         ├ pod1 .2
//	                  └ pod2 .3         └ pod2 .3         └ pod2 .3
//
// Each pod runs a tiny TCP server on :8080 answering "<node>/<pod> <client IP>".
//
//	TestCluster     (proactive, --ip-masq): 1 connectivity, 8 malformed lease,
//	                3 Service via kube-proxy style iptables, 2 pod → outside
//	                (+ node4 with --ip-masq=false)
//	TestResilience  (proactive): 4 agent restart under ping, 5 etcd outage 20 s
//	                under ping then a node joins, 6 a node leaves
//	TestOnDemand    (--neigh-mode=on-demand, Debian etcd when installed): 7
//
// Issue 14 (families; doc.go says why the underlay follows the overlay):
//
//	TestFamilyMatrix                 ipv4/ipv4-underlay, dual/dual-underlay,
//	                                 ipv6/ipv6-underlay: 3 nodes × 2 pods; devices,
//	                                 subnet.env, lease values, pings per family,
//	                                 masquerade per family, restart under ping
//	TestDualStackNeedsIPv6Underlay   dual config, IPv4-only underlay: weftd refuses
//	TestFlannelDualStackPeer         a hand-made dual-stack flannel node and pod
//
// With an IPv6 underlay every eth0 also has fd00:198:18::N (etcd ::200, the
// outside host ::250); the IPv6 pod network is fc00::/48, a /64 per node, on
// flannel-v6.1.

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/weftnet/weft/test/lab"
	"github.com/weftnet/weft/test/nettest"
	"github.com/weftnet/weft/test/testlog"
)

// binDir holds weftd, weft and portmap, built once by TestMain (or taken
// from WEFT_E2E_BIN_DIR, which must then hold all three).
var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() || os.Geteuid() != 0 {
		os.Exit(m.Run()) // every test skips through nettest.Privileged
	}
	dir, cleanup, err := buildBinaries()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binDir = dir
	stop := closeLabsOnSignal()
	code := m.Run()
	stop()
	cleanup()
	os.Exit(code)
}

// buildBinaries builds weftd, weft-etcd, weft and portmap into a temp dir, the way
// `make build` does (CGO off).
func buildBinaries() (string, func(), error) {
	if dir := os.Getenv("WEFT_E2E_BIN_DIR"); dir != "" {
		return dir, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "weft-e2e-bin-")
	if err != nil {
		return "", nil, fmt.Errorf("bin dir: %w", err)
	}
	cleanup := func() { _ = os.RemoveAll(dir) }
	for _, pkg := range []string{"./cmd/weftd", "./cmd/weft-etcd", "./cmd/weft", "github.com/containernetworking/plugins/plugins/meta/portmap"} {
		cmd := exec.Command("go", "build", "-o", dir+"/", pkg)
		cmd.Dir = filepath.Join("..", "..")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			cleanup()
			return "", nil, fmt.Errorf("go build %s: %w: %s", pkg, err, out)
		}
	}
	return dir, cleanup, nil
}

// openLabs are closed if the test binary gets SIGINT or SIGTERM, since
// t.Cleanup does not run then.
var openLabs sync.Map // *lab.Lab → struct{}

func closeLabsOnSignal() (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-quit: // tests finished
			return
		case sig := <-sigs:
			openLabs.Range(func(k, _ any) bool {
				_ = k.(*lab.Lab).Close()
				return true
			})
			fmt.Fprintf(os.Stderr, "e2e: %v: labs removed\n", sig)
			os.Exit(130)
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(quit)
		<-done
	}
}

// newLab builds a lab for t and removes it in t.Cleanup; on failure the
// tail of every agent's and etcd's log is logged first.
func newLab(t *testing.T, opts lab.Options) *lab.Lab {
	t.Helper()
	nettest.Privileged(t)
	opts.BinDir, opts.CNIPath = binDir, binDir
	if opts.Etcd == "" {
		opts.Etcd = os.Getenv("WEFT_E2E_ETCD")
	}
	opts.Log = testlog.New(t, slog.LevelInfo)
	l, err := lab.New(t.Context(), opts)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	openLabs.Store(l, struct{}{})
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, l)
		}
		openLabs.Delete(l)
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return l
}

func dumpLogs(t *testing.T, l *lab.Lab) {
	for _, n := range l.Nodes() {
		t.Logf("---- %s weftd log (tail) ----\n%s", n.Name, n.LogTail(40))
	}
	for _, f := range []string{"etcd.log", "cni.log"} {
		b, _ := os.ReadFile(filepath.Join(l.Dir(), f))
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 20 {
			lines = lines[len(lines)-20:]
		}
		t.Logf("---- %s (tail) ----\n%s", f, strings.Join(lines, "\n"))
	}
}
