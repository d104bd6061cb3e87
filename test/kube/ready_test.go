package kube

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftnet/weft/test/kube/cluster"
)

// readyWatch polls, every 200 ms, each node's Ready condition and then
// whether its subnet.env exists. subnet.env is never removed while it runs,
// so a poll that saw Ready=True and then no subnet.env proves the node was
// Ready before weftd wrote it.
type readyWatch struct {
	mu         sync.Mutex
	violations []string
	notReady   map[string]string // node → first NotReady message seen
	stop       func()
}

func (k *tier) watchReady(ctx context.Context) *readyWatch {
	w := &readyWatch{notReady: map[string]string{}}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			for _, n := range k.c.Nodes() {
				node, err := k.node(ctx, n.Name)
				if err != nil {
					continue
				}
				cond := readyCondition(node)
				mtime, err := subnetEnvTime(n)
				if err != nil {
					continue
				}
				w.mu.Lock()
				if cond.Status == corev1.ConditionTrue && mtime.IsZero() {
					w.violations = append(w.violations, fmt.Sprintf("%s Ready at %s without subnet.env", n.Name, time.Now().Format(time.StampMilli)))
				}
				if cond.Status != corev1.ConditionTrue && w.notReady[n.Name] == "" {
					w.notReady[n.Name] = cond.Message
				}
				w.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	w.stop = func() { cancel(); <-done }
	return w
}

// checkReadyAfterSubnetEnv (check 1) installs weft as the README says and
// shows that the nodes turn Ready only once weftd has written subnet.env:
// before the network config exists weftd runs but writes nothing, and the
// nodes and their runtimes report the network not ready.
func (k *tier) checkReadyAfterSubnetEnv(t *testing.T) {
	ctx := t.Context()
	w := k.watchReady(ctx)
	defer w.stop()
	for _, n := range k.c.Nodes() {
		if msg, ready := k.nodeReady(t, n.Name); ready {
			t.Fatalf("%s Ready before weft is installed (%s)", n.Name, msg)
		}
	}

	name, tag, err := cluster.ImageRef(env.weftImage)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := k.c.WriteKustomization(filepath.Join("..", "..", "manifests", "weft.yaml"), name, tag)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	k.kubectl(t, "", cluster.ApplyArgs(dir)...)

	// weftd runs on every node but has no network config yet.
	k.waitWeftdRunning(t, 90*time.Second)
	for _, n := range k.c.Nodes() {
		if mtime, err := subnetEnvTime(n); err != nil || !mtime.IsZero() {
			t.Fatalf("%s: subnet.env before the network config exists (%v, %v)", n.Name, mtime, err)
		}
		ok, why, err := runtimeNetwork(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			t.Errorf("%s: runtime reports NetworkReady before subnet.env exists", n.Name)
		}
		t.Logf("%s before init-network: runtime NetworkReady=false (%s)", n.Name, why)
	}

	k.initNetwork(t)
	k.kubectl(t, "", cluster.RolloutStatusArgs...)
	for _, n := range k.c.Nodes() {
		k.waitNodeReady(t, n.Name, true, 60*time.Second)
	}
	t.Logf("both nodes Ready %s after kubectl apply", time.Since(start).Round(100*time.Millisecond))
	w.stop()
	k.assertReadyAfterSubnetEnv(t, w)
}

// assertReadyAfterSubnetEnv checks what the watch saw: no node Ready
// without subnet.env, each NotReady for its network first, Ready since
// subnet.env was written, and the runtimes' NetworkReady now true.
func (k *tier) assertReadyAfterSubnetEnv(t *testing.T, w *readyWatch) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, v := range w.violations {
		t.Errorf("node Ready before subnet.env: %s", v)
	}
	for _, n := range k.c.Nodes() {
		msg := w.notReady[n.Name]
		if !strings.Contains(msg, "network") {
			t.Errorf("%s: NotReady message %q does not name the network", n.Name, msg)
		}
		mtime, err := subnetEnvTime(n)
		if err != nil || mtime.IsZero() {
			t.Fatalf("%s: no subnet.env after Ready (%v)", n.Name, err)
		}
		node, err := k.node(t.Context(), n.Name)
		if err != nil {
			t.Fatal(err)
		}
		// lastTransitionTime has a resolution of one second.
		if rt := readyCondition(node).LastTransitionTime.Time; rt.Before(mtime.Truncate(time.Second)) {
			t.Errorf("%s: Ready since %s, subnet.env written at %s", n.Name, rt, mtime)
		}
		ok, why, err := runtimeNetwork(t.Context(), n)
		if err != nil || !ok {
			t.Errorf("%s: runtime NetworkReady=%v (%s, %v) with subnet.env present", n.Name, ok, why, err)
		}
	}
}

// nodeReady returns the node's Ready condition: its message and whether it
// is True.
func (k *tier) nodeReady(t *testing.T, name string) (string, bool) {
	t.Helper()
	node, err := k.node(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	c := readyCondition(node)
	return c.Message, c.Status == corev1.ConditionTrue
}

// waitNodeReady waits until the node's Ready condition is True (want) or
// not, and returns its message then.
func (k *tier) waitNodeReady(t *testing.T, name string, want bool, limit time.Duration) string {
	t.Helper()
	var msg string
	what := name + " Ready"
	if !want {
		what = name + " NotReady"
	}
	err := k.c.WaitFor(t.Context(), what, limit, func() (bool, string) {
		node, err := k.node(t.Context(), name)
		if err != nil {
			return false, err.Error()
		}
		c := readyCondition(node)
		msg = c.Message
		return (c.Status == corev1.ConditionTrue) == want, c.Message
	})
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// initNetwork runs the README's init-network command, retried every 2 s as
// its `until ... do sleep 2` loop does (2 minutes at most).
func (k *tier) initNetwork(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		out, err := k.c.Kubectl(ctx, "", cluster.InitNetworkArgs...)
		cancel()
		if err == nil {
			t.Logf("init-network: %s", strings.TrimSpace(out))
			return
		}
		if time.Now().After(deadline) || t.Context().Err() != nil {
			t.Fatalf("init-network: %v", err)
		}
		t.Logf("init-network (retrying in %s): %v", cluster.InitNetworkRetry, err)
		time.Sleep(cluster.InitNetworkRetry)
	}
}

// waitWeftdRunning waits until the weftd container runs on every node.
func (k *tier) waitWeftdRunning(t *testing.T, limit time.Duration) {
	t.Helper()
	err := k.c.WaitFor(t.Context(), "weftd running on every node", limit, func() (bool, string) {
		ps, err := k.pods(t.Context(), "kube-weft", "app.kubernetes.io/name=weft")
		if err != nil {
			return false, err.Error()
		}
		running := map[string]bool{}
		var states []string
		for _, p := range ps {
			for _, cs := range p.Status.ContainerStatuses {
				if cs.Name == "weftd" && cs.State.Running != nil && p.DeletionTimestamp == nil {
					running[p.Spec.NodeName] = true
				}
			}
			states = append(states, fmt.Sprintf("%s@%s=%s", p.Name, p.Spec.NodeName, p.Status.Phase))
		}
		return len(running) == len(k.c.Nodes()), strings.Join(states, " ")
	})
	if err != nil {
		t.Fatal(err)
	}
}
