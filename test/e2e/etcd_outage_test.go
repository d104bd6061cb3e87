package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// With the built weftd: etcd problems are never silent.
//
// TestEtcdUnreachableAtStart: node2's agent starts while etcd is stopped.
// Within 5 s its log has a warning naming the endpoint and the error, and
// /readyz says "etcd unreachable: ..."; when etcd starts, a line says the
// agent connected, and it becomes ready.
func TestEtcdUnreachableAtStart(t *testing.T) {
	l := newLab(t, lab.Options{Nodes: 1})
	ctx := t.Context()
	ep := l.EtcdEndpoint()
	if err := l.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	opts := l.NodeDefaults()
	opts.NoStart = true
	n, err := l.AddNode(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	ready := make(chan error, 1)
	go func() { ready <- n.StartAgent(ctx) }() // returns once /readyz is 200 (30 s at most)
	warn, err := waitLogLine(n, 0, 10*time.Second, "level=WARN", "etcd unreachable", ep, "connection refused")
	if err != nil {
		t.Fatalf("%v\n%s", err, n.LogTail(20))
	}
	if took := warn.Sub(started); took >= 5*time.Second {
		t.Errorf("warning naming %s and the error %s after the agent started, want within 5s", ep, took.Round(time.Millisecond))
	}
	_, rerr := n.HTTPGet(ctx, "/readyz")
	if rerr == nil || !strings.Contains(rerr.Error(), "etcd unreachable: "+ep) {
		t.Errorf("/readyz while etcd is unreachable: %v, want 503 \"etcd unreachable: %s: ...\"", rerr, ep)
	}
	time.Sleep(6 * time.Second) // more failed probes, and the agent's config read fails too: still one line
	if err := l.StartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-ready; err != nil {
		t.Fatalf("agent after etcd started: %v", err)
	}
	logs := readLog(t, n, 0)
	if countMatching(logs, "level=INFO", "connected to etcd", ep) != 1 {
		t.Errorf("no single \"connected to etcd\" line:\n%s", strings.Join(logs, "\n"))
	}
	if k := countMatching(logs, "level=WARN"); k != 1 {
		t.Errorf("%d warnings for one outage shorter than 30 s, want 1:\n%s", k, strings.Join(logs, "\n"))
	}
	t.Logf("node2 log:\n%s", strings.Join(logs, "\n"))
}

// TestEtcdOutageWhileRunning: etcd stops for a few seconds while node1's pod
// pings node2's. Within 10 s node1's log has one warning, /metrics shows
// weft_etcd_up 0 and weft_etcd_failures_total up by one, /readyz stays 200
// (the lease is held, the datapath serves); after etcd is back a line says
// so, weft_etcd_up is 1 again, and no echo was lost.
func TestEtcdOutageWhileRunning(t *testing.T) {
	l := newLab(t, lab.Options{Nodes: 2})
	ctx := t.Context()
	ep := l.EtcdEndpoint()
	n := l.Nodes()[0]
	pods := addPods(t, l, l.Nodes(), 1)
	before := metricValues(t, n, "weft_etcd_up", "weft_etcd_failures_total")
	if before["weft_etcd_up"] != 1 {
		t.Errorf("weft_etcd_up before the outage = %v, want 1", before["weft_etcd_up"])
	}
	offset := logSize(t, n)
	p, err := lab.StartPing(ctx, pods[0].NS, pods[1].IP, 0, pingInterval)
	if err != nil {
		t.Fatal(err)
	}
	r, err := pingAcross(p, func() error {
		if err := l.StopEtcd(); err != nil {
			return err
		}
		stopped := time.Now()
		warn, err := waitLogLine(n, offset, 15*time.Second, "level=WARN", "etcd unreachable", ep)
		if err != nil {
			return errors.Join(err, l.StartEtcd(ctx))
		}
		if took := warn.Sub(stopped); took >= 10*time.Second {
			t.Errorf("warning %s after etcd stopped, want within 10s", took.Round(time.Millisecond))
		}
		during := metricValues(t, n, "weft_etcd_up", "weft_etcd_failures_total")
		if during["weft_etcd_up"] != 0 || during["weft_etcd_failures_total"] != before["weft_etcd_failures_total"]+1 {
			t.Errorf("metrics during the outage %v (before %v): want weft_etcd_up 0 and one more failure", during, before)
		}
		if !n.Ready(ctx) {
			_, rerr := n.HTTPGet(ctx, "/readyz")
			t.Errorf("%s not ready during an etcd outage (its lease is held, the datapath serves): %v", n.Name, rerr)
		}
		time.Sleep(5 * time.Second) // the outage goes on: several failed probes, no more lines
		return l.StartEtcd(ctx)
	})
	if err != nil {
		t.Fatalf("etcd outage: %v\n%s", err, n.LogTail(20))
	}
	if _, err := waitLogLine(n, offset, 15*time.Second, "level=INFO", "etcd reachable again", ep); err != nil {
		t.Errorf("%v", err)
	}
	if after := metricValues(t, n, "weft_etcd_up"); after["weft_etcd_up"] != 1 {
		t.Errorf("weft_etcd_up after the outage = %v, want 1", after["weft_etcd_up"])
	}
	logs := readLog(t, n, offset)
	if k := countMatching(logs, "level=WARN"); k != 1 {
		t.Errorf("%d warnings for one outage shorter than 30 s, want 1:\n%s", k, strings.Join(logs, "\n"))
	}
	if r.Loss() > 0 {
		t.Errorf("ping %s → %s across the etcd outage: %v, want no loss", podID(pods[0]), podID(pods[1]), r)
	}
	t.Logf("ping across the outage: %v; node1 log during it:\n%s", r, strings.Join(logs, "\n"))
}

// logSize is the length of n's log now: lines after it are new.
func logSize(t *testing.T, n *lab.Node) int64 {
	st, err := os.Stat(n.LogFile())
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// readLog returns the lines of n's log after offset.
func readLog(t *testing.T, n *lab.Node, offset int64) []string {
	lines, err := logLines(n, offset)
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

func logLines(n *lab.Node, offset int64) ([]string, error) {
	f, err := os.Open(n.LogFile())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return nil, err
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, sc.Err()
}

// waitLogLine polls n's log (after offset) for a line containing every one of
// subs and returns when it was first seen.
func waitLogLine(n *lab.Node, offset int64, limit time.Duration, subs ...string) (time.Time, error) {
	deadline := time.Now().Add(limit)
	for {
		lines, err := logLines(n, offset)
		if err != nil && !errors.Is(err, os.ErrNotExist) { // the agent may not have started yet
			return time.Time{}, err
		}
		if countMatching(lines, subs...) > 0 {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s: no log line with %q within %s", n.Name, subs, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func countMatching(lines []string, subs ...string) int {
	k := 0
	for _, line := range lines {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			k++
		}
	}
	return k
}

// metricValues reads unlabelled metrics from n's /metrics (absent: -1).
func metricValues(t *testing.T, n *lab.Node, names ...string) map[string]float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	b, err := n.HTTPGet(ctx, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, name := range names {
		out[name] = -1
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(b)
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			t.Fatal(errors.Join(fmt.Errorf("%s in /metrics", name), err))
		}
		out[name] = v
	}
	return out
}
