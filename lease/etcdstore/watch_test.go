package etcdstore_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/lease/etcdstore"
	"github.com/weftnet/weft/lease/etcdstore/etcdtest"
)

func TestWatchSnapshotAndDeltasSkippingCorruptValues(t *testing.T) {
	eachEtcd(t, func(t *testing.T, eps []string) {
		cli, s := setup(t, eps, testConfig)
		a, err := acquire(tctx(t), s, req("198.18.0.1", "a"))
		if err != nil {
			t.Fatal(err)
		}
		logs := &syncBuffer{}
		ws := etcdstore.New(cli, "", slog.New(slog.NewTextHandler(logs, nil)))
		w, err := ws.Watch(tctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if got := collect(t, w, 1); !slices.Equal(got, []string{"added " + a.Key()}) {
			t.Fatalf("snapshot %q", got)
		}
		b, err := acquire(tctx(t), s, req("198.18.0.2", "b"))
		if err != nil {
			t.Fatal(err)
		}
		if got := collect(t, w, 1); !slices.Equal(got, []string{"added " + b.Key()}) {
			t.Fatalf("add: %q", got)
		}
		// b's VtepMAC changes: one Changed event with the new value.
		rb := req("198.18.0.2", "b")
		rb.Attrs.BackendData.VtepMAC[0] = 0x02
		if _, err := acquire(tctx(t), s, rb); err != nil {
			t.Fatal(err)
		}
		batch := next(t, w)
		if len(batch) != 1 || batch[0].Type != lease.Changed || batch[0].Lease.Attrs.BackendData.VtepMAC[0] != 0x02 {
			t.Fatalf("change: %+v", batch)
		}
		// Garbage: a corrupt value, a key that does not parse, another backend.
		dir := lease.DefaultPrefix + "/subnets/"
		for k, v := range map[string]string{
			dir + "10.244.200.0-24": `{"PublicIP":"not an ip"`,
			dir + "garbage-key":     `{}`,
			dir + "10.244.201.0-24": `{"PublicIP":"198.18.0.201","PublicIPv6":null,"BackendType":"host-gw"}`,
		} {
			if _, err := cli.Put(tctx(t), k, v); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Release(tctx(t), a); err != nil {
			t.Fatal(err)
		}
		batch = next(t, w) // the garbage produced no events: the next one is a's removal
		if len(batch) != 1 || batch[0].Type != lease.Removed || batch[0].Lease.Key() != a.Key() || batch[0].Lease.Attrs.NodeName != "a" {
			t.Fatalf("remove: %+v", batch)
		}
		// A List through the same store sees the same keys: no second warning.
		all, err := ws.List(tctx(t))
		if err != nil || len(all) != 1 || all[0].Key() != b.Key() {
			t.Fatalf("list: %+v %v", all, err)
		}
		checkOneWarningEach(t, logs.String(), dir, "10.244.200.0-24", "garbage-key", "10.244.201.0-24")
		// The corrupt blocks are never handed out.
		for range 5 {
			r := req("198.18.0.3", "c")
			r.Prev = mustPrefix("10.244.200.0/24")
			l, err := acquire(tctx(t), s, r)
			if err != nil || l.Subnet.String() == "10.244.200.0/24" {
				t.Fatalf("acquire over a corrupt key: %+v %v", l, err)
			}
		}
	})
}

// The watcher's connection is cut; meanwhile leases change and etcd compacts
// its history past the watcher's revision. On reconnect the watcher re-lists
// and sends exactly the difference.
func TestWatchResumesAfterCompaction(t *testing.T) {
	eachEtcd(t, func(t *testing.T, eps []string) {
		cli, s := setup(t, eps, testConfig)
		keep, _ := acquire(tctx(t), s, req("198.18.0.1", "keep"))
		gone, _ := acquire(tctx(t), s, req("198.18.0.2", "gone"))
		change, err := acquire(tctx(t), s, req("198.18.0.3", "change"))
		if err != nil {
			t.Fatal(err)
		}
		proxy := etcdtest.NewProxy(t, eps[0])
		wcli := etcdtest.Client(t, []string{proxy.Endpoint()})
		ws := etcdstore.New(wcli, "", testLogger(t), etcdstore.WithBackoff(50*time.Millisecond, 500*time.Millisecond))
		w, err := ws.Watch(tctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if got := collect(t, w, 3); len(got) != 3 {
			t.Fatalf("snapshot %q", got)
		}
		proxy.Pause()
		if err := s.Release(tctx(t), gone); err != nil {
			t.Fatal(err)
		}
		added, err := acquire(tctx(t), s, req("198.18.0.4", "new"))
		if err != nil {
			t.Fatal(err)
		}
		rc := req("198.18.0.33", "change") // same name, new IP: value changes in place
		if _, err := acquire(tctx(t), s, rc); err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Get(tctx(t), "/")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Compact(tctx(t), resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
			t.Fatal(err)
		}
		proxy.Resume()
		got := collect(t, w, 3)
		sort.Strings(got)
		want := []string{"added " + added.Key(), "changed " + change.Key(), "removed " + gone.Key()}
		if !slices.Equal(got, want) {
			t.Fatalf("after compaction: %q, want %q", got, want)
		}
		quiet(t, w, 300*time.Millisecond)
		// And the watch goes on from the new revision.
		if err := s.Release(tctx(t), keep); err != nil {
			t.Fatal(err)
		}
		if got := collect(t, w, 1); !slices.Equal(got, []string{"removed " + keep.Key()}) {
			t.Fatalf("after resume: %q", got)
		}
	})
}

func TestWatchClosesWithContext(t *testing.T) {
	cli, _ := setup(t, startEmbedded(t), testConfig)
	ctx, cancel := context.WithCancel(tctx(t))
	defer cancel()
	w, err := etcdstore.New(cli, "", nil).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if snap := next(t, w); len(snap) != 0 {
		t.Fatalf("snapshot of an empty store: %+v", snap)
	}
	cancel()
	select {
	case _, ok := <-w:
		if ok {
			t.Fatal("batch after cancel")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("channel not closed after cancel")
	}
}

func checkOneWarningEach(t *testing.T, out, dir string, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if n := strings.Count(out, "key="+dir+k+" "); n != 1 {
			t.Errorf("%d warnings mention %s, want 1:\n%s", n, k, out)
		}
	}
	if !strings.Contains(out, "another backend") {
		t.Errorf("no 'another backend' warning:\n%s", out)
	}
}

// A compacted watch (flannel#2470: a watch resumed at a compacted revision
// spins there forever). The watcher's etcd stops; while the watcher cannot
// reconnect (its proxy is paused) etcd starts again on the same data, a lease
// is added and the history is compacted past the watcher's revision. Once the
// watcher can reconnect, the new lease arrives within 5 s, and the whole
// episode costs the watcher's store only a few log lines.
func TestWatchResumesAfterRestartAndCompaction(t *testing.T) {
	eachRestartable(t, func(t *testing.T, r *etcdtest.Restartable) {
		r.Start()
		cli, s := setup(t, r.Endpoints(), testConfig)
		keep, err := acquire(tctx(t), s, req("198.18.0.1", "keep"))
		if err != nil {
			t.Fatal(err)
		}
		proxy := etcdtest.NewProxy(t, r.Endpoints()[0])
		logs := &syncBuffer{}
		ws := etcdstore.New(etcdtest.Client(t, []string{proxy.Endpoint()}), "", slogText(logs))
		w, err := ws.Watch(tctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if got := collect(t, w, 1); !slices.Equal(got, []string{"added " + keep.Key()}) {
			t.Fatalf("snapshot %q", got)
		}
		r.Stop()
		proxy.Pause()
		time.Sleep(3 * time.Second) // an outage the watcher's client sees
		r.Start()
		added, err := acquire(tctx(t), s, req("198.18.0.2", "new")) // s's client reconnects directly
		if err != nil {
			t.Fatal(err)
		}
		for i := range 20 { // history the watcher never saw
			if _, err := cli.Put(tctx(t), "/other/key", fmt.Sprint(i)); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := cli.Get(tctx(t), "/")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Compact(tctx(t), resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
			t.Fatal(err)
		}
		proxy.Resume()
		resumed := time.Now()
		got := collectWithin(t, w, 1, 30*time.Second)
		took := time.Since(resumed)
		if !slices.Equal(got, []string{"added " + added.Key()}) {
			t.Fatalf("after restart and compaction: %q, want the new lease", got)
		}
		if took >= 5*time.Second {
			t.Errorf("new lease delivered %s after the watcher could reconnect, want within 5s", took)
		}
		quiet(t, w, 2*time.Second) // and nothing else: no replay, no spin
		if n := countLines(logs.String(), "level="); n > 3 {
			t.Errorf("%d log lines for one restart with compaction, want at most 3:\n%s", n, logs)
		}
		t.Logf("delivered %s after resume; log:\n%s", took.Round(time.Millisecond), logs)
	})
}

// collectWithin is collect with its own limit.
func collectWithin(t *testing.T, ch <-chan []lease.Event, want int, limit time.Duration) []string {
	t.Helper()
	var got []string
	deadline := time.After(limit)
	for len(got) < want {
		select {
		case b, ok := <-ch:
			if !ok {
				t.Fatal("watch channel closed")
			}
			for _, ev := range b {
				got = append(got, ev.Type.String()+" "+ev.Lease.Key())
			}
		case <-deadline:
			t.Fatalf("only %q within %s", got, limit)
		}
	}
	return got
}
