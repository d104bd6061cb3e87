package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
)

// benchCNI measures the weft CNI plugin as a runtime sees it: the built
// binary driven through libcni (a conflist with weft alone), in a node netns
// of its own with one netns per pod.
//
//   - ADD and DEL latency, p50 and p99, over 200 pods added one after the
//     other (all alive at once), then deleted one after the other;
//   - ADD throughput: 64 pods added by 16 workers, pods per second of wall time.
//
// The state (IPAM directory, libcni's cache) is on a journaled ext4, as a
// node's /var/lib is (statefs.go says why that matters); ADD p50
// is also measured with the state on the root filesystem.
func benchCNI(ctx context.Context, env Env) ([]Row, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("needs root (network namespaces)")
	}
	weft, err := filepath.Abs(filepath.Join(env.BinDir, "weft"))
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(weft); err != nil {
		return nil, fmt.Errorf("built plugin: %w", err)
	}
	tmp, err := os.MkdirTemp("", "weft-bench-cni-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	journaled, err := journaledExt4(tmp)
	if err != nil {
		return nil, fmt.Errorf("journaled ext4 for the CNI state: %w", err)
	}
	defer journaled.cleanup()
	rows, err := cniFigures(ctx, weft, journaled, true)
	if err != nil {
		return nil, err
	}
	root, err := rootFS(tmp)
	if err != nil {
		return nil, err
	}
	more, err := cniFigures(ctx, weft, root, false)
	if err != nil {
		return nil, err
	}
	return append(rows, more...), nil
}

// cniFigures runs the pods with their state in fs; all reports every
// figure with targets, otherwise only ADD p50 is reported.
func cniFigures(ctx context.Context, weft string, fs *stateFS, all bool) ([]Row, error) {
	b, err := newCNIBench(filepath.Dir(weft), fs.dir)
	if err != nil {
		return nil, err
	}
	defer b.close()

	const seqPods, parPods, workers = 200, 64, 16
	ids := make([]string, seqPods)
	for i := range ids {
		ids[i] = fmt.Sprintf("bench-seq-%03d", i)
	}
	if err := b.makePods(ids); err != nil {
		return nil, err
	}
	addLat, err := b.sequential(ctx, ids, b.add)
	if err != nil {
		return nil, err
	}
	delLat, err := b.sequential(ctx, ids, b.del)
	if err != nil {
		return nil, err
	}
	how := fmt.Sprintf("built weft via libcni (weft-only conflist, 1.1.0) in a node netns, %d sequential pods, %s", seqPods, fs.what)
	p50, p99 := ms(percentile(addLat, 50)), ms(percentile(addLat, 99))
	if !all {
		return []Row{{Figure: "cni ADD p50 (root fs)", Value: p50, Unit: "ms", How: how}}, nil
	}
	par := make([]string, parPods)
	for i := range par {
		par[i] = fmt.Sprintf("bench-par-%03d", i)
	}
	if err := b.makePods(par); err != nil {
		return nil, err
	}
	wall, err := b.parallel(ctx, par, workers)
	if err != nil {
		return nil, err
	}
	rate := float64(parPods) / wall.Seconds()
	return []Row{
		{Figure: "cni ADD p50", Value: p50, Unit: "ms", Target: "< 5 ms", Met: met(p50 < 5), How: how},
		{Figure: "cni ADD p99", Value: p99, Unit: "ms", How: how},
		{Figure: "cni DEL p50", Value: ms(percentile(delLat, 50)), Unit: "ms", Target: "< 5 ms", Met: met(ms(percentile(delLat, 50)) < 5), How: how},
		{Figure: "cni DEL p99", Value: ms(percentile(delLat, 99)), Unit: "ms", How: how},
		{Figure: "cni ADD throughput", Value: rate, Unit: "pods/s", Target: ">= 250 pods/s", Met: met(rate >= 250),
			How: fmt.Sprintf("%d pods, %d parallel workers, wall time of all ADDs, %s", parPods, workers, fs.what)},
	}, nil
}

// cniBench owns the node netns, the pod netns and the temporary files.
type cniBench struct {
	dir    string
	prefix string
	node   ns.NetNS
	cni    *libcni.CNIConfig
	list   *libcni.NetworkConfigList
	mu     sync.Mutex
	netns  []string // names to delete
}

func newCNIBench(binDir, stateDir string) (_ *cniBench, err error) {
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	b := &cniBench{prefix: "wbench-" + hex.EncodeToString(rnd[:])}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	if b.dir, err = os.MkdirTemp(stateDir, "run-"); err != nil {
		return nil, err
	}
	subnetFile := filepath.Join(b.dir, "subnet.env")
	env := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	if err = os.WriteFile(subnetFile, []byte(env), 0o644); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`{"name":"cbr0","cniVersion":"1.1.0","plugins":[{"type":"weft","subnetFile":%q,"dataDir":%q}]}`,
		subnetFile, filepath.Join(b.dir, "networks"))
	if b.list, err = libcni.NetworkConfFromBytes([]byte(conf)); err != nil {
		return nil, err
	}
	b.cni = libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(b.dir, "cache"), nil)
	name := b.prefix + "-node"
	if err = b.addNetns(name); err != nil {
		return nil, err
	}
	if b.node, err = ns.GetNS("/run/netns/" + name); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *cniBench) addNetns(name string) error {
	if err := runCmd("ip", "netns", "add", name); err != nil {
		return err
	}
	b.mu.Lock()
	b.netns = append(b.netns, name)
	b.mu.Unlock()
	return nil
}

func (b *cniBench) makePods(ids []string) error {
	for _, id := range ids {
		if err := b.addNetns(b.prefix + "-" + id); err != nil {
			return err
		}
	}
	return nil
}

// close deletes every netns (pods first; the node's veths go with it) and the files.
func (b *cniBench) close() {
	if b.node != nil {
		_ = b.node.Close()
	}
	for _, name := range slices.Backward(b.netns) {
		if err := runCmd("ip", "netns", "del", name); err != nil {
			fmt.Fprintf(os.Stderr, "bench cni: %v\n", err)
		}
	}
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}

func (b *cniBench) rt(id string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, IfName: "eth0", NetNS: "/run/netns/" + b.prefix + "-" + id}
}

// add and del run libcni with the thread in the node netns, so the plugin
// (forked from this thread) runs there.
func (b *cniBench) add(ctx context.Context, id string) error {
	return b.node.Do(func(ns.NetNS) error {
		_, err := b.cni.AddNetworkList(ctx, b.list, b.rt(id))
		return err
	})
}

func (b *cniBench) del(ctx context.Context, id string) error {
	return b.node.Do(func(ns.NetNS) error { return b.cni.DelNetworkList(ctx, b.list, b.rt(id)) })
}

func (b *cniBench) sequential(ctx context.Context, ids []string, op func(context.Context, string) error) ([]time.Duration, error) {
	lat := make([]time.Duration, 0, len(ids))
	for _, id := range ids {
		start := time.Now()
		if err := op(ctx, id); err != nil {
			return nil, fmt.Errorf("%s: %w", id, err)
		}
		lat = append(lat, time.Since(start))
	}
	return lat, nil
}

// parallel ADDs ids with workers goroutines and returns the wall time; the
// pods are deleted afterwards (not timed).
func (b *cniBench) parallel(ctx context.Context, ids []string, workers int) (time.Duration, error) {
	work := make(chan string)
	errs := make(chan error, len(ids))
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for id := range work {
				if err := b.add(ctx, id); err != nil {
					errs <- fmt.Errorf("%s: %w", id, err)
				}
			}
		})
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
	wall := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	for _, id := range ids {
		if err := b.del(ctx, id); err != nil {
			return 0, fmt.Errorf("%s: %w", id, err)
		}
	}
	return wall, nil
}

func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
