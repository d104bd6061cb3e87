package plugin_test

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"

	"github.com/weftnet/weft/test/nettest"
)

// TestParallelAdds: 32 concurrent ADDs get 32 distinct addresses; 32
// concurrent DELs leave nothing.
func TestParallelAdds(t *testing.T) {
	nettest.Privileged(t)
	const pods = 32
	n := newNode(t, "10.244.1.1/24")
	list := n.conflist(t, "", nil)
	rts := make([]*libcni.RuntimeConf, pods)
	for i := range rts {
		rts[i] = rtFor(fmt.Sprintf("ctr-par-%02d", i), nettest.NewNS(t, "cp"))
	}
	ips := make([]string, pods)
	errs := make([]error, pods)
	var wg sync.WaitGroup
	for i, rt := range rts {
		wg.Go(func() {
			res, err := n.add(list, rt)
			if err == nil {
				var r *current.Result
				if r, err = current.NewResultFromResult(res); err == nil {
					ips[i] = r.IPs[0].Address.IP.String()
				}
			}
			errs[i] = err
		})
	}
	wg.Wait()
	seen := map[string]int{}
	for i := range pods {
		if errs[i] != nil {
			t.Fatalf("ADD %d: %v", i, errs[i])
		}
		if j, dup := seen[ips[i]]; dup {
			t.Fatalf("pods %d and %d both got %s", j, i, ips[i])
		}
		seen[ips[i]] = i
	}
	if f, v := n.ipFiles(t), n.veths(t); len(f) != pods || len(v) != pods {
		t.Fatalf("%d reservations and %d veths, want %d each", len(f), len(v), pods)
	}
	for i, rt := range rts {
		wg.Go(func() { errs[i] = n.del(list, rt) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("DEL %d: %v", i, err)
		}
	}
	verifyDetached(t, n, nil)
}

// TestAddDelCycles: many sequential ADD/DEL cycles, each pod in a fresh
// netns, leave no reservation, veth or netns behind.
func TestAddDelCycles(t *testing.T) {
	nettest.Privileged(t)
	cycles := 1000
	if testing.Short() {
		cycles = 50
	}
	n := newNode(t, "10.244.1.1/24")
	list := n.conflist(t, "", nil)
	start := time.Now()
	var paths []string
	for i := range cycles {
		pod, err := testutils.NewNS()
		if err != nil {
			t.Fatalf("cycle %d: new netns: %v", i, err)
		}
		paths = append(paths, pod.Path())
		err = cycle(t, n, list, pod, fmt.Sprintf("ctr-cycle-%04d", i))
		_ = pod.Close()
		if uerr := testutils.UnmountNS(pod); uerr != nil && err == nil {
			err = fmt.Errorf("remove netns: %w", uerr)
		}
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
	}
	t.Logf("%d ADD/DEL cycles through libcni (weft + portmap) in %s", cycles, time.Since(start).Round(time.Millisecond))
	verifyDetached(t, n, nil)
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("netns %s left behind", p)
		}
	}
}

// cycle is one ADD, a check that the pod has its address, and one DEL.
func cycle(t *testing.T, n *node, list *libcni.NetworkConfigList, pod ns.NetNS, id string) error {
	rt := &libcni.RuntimeConf{ContainerID: id, IfName: "eth0", NetNS: pod.Path()}
	if _, err := n.add(list, rt); err != nil {
		return fmt.Errorf("ADD: %w", err)
	}
	if len(n.ipFiles(t)) != 1 {
		return fmt.Errorf("want exactly one reservation after ADD")
	}
	if err := n.del(list, rt); err != nil {
		return fmt.Errorf("DEL: %w", err)
	}
	return nil
}
