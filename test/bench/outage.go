package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// outageWindow is how long etcd stays down in the outage figure.
const outageWindow = 60 * time.Second

// benchOutage measures what an agent costs while etcd is down (flannel spun a
// core reconnecting without backoff): a two-node
// proactive lab (node1 has a peer, a lease to keep alive and a watch), etcd
// stopped for 60 s; node1's agent's utime+stime over the outage from
// /proc/PID/stat, as a share of one core. Also reported: the agent's log
// lines during the outage (one warning, then at most one every 30 s) and
// whether it reported etcd back after the restart.
func benchOutage(ctx context.Context, env Env) ([]Row, error) {
	l, err := newLab(ctx, env, lab.Options{Nodes: 2})
	if err != nil {
		return nil, err
	}
	defer closeLab(l)
	n := l.Nodes()[0]
	if err := sleepCtx(ctx, idleSettle); err != nil {
		return nil, err
	}
	pid := n.AgentPID()
	offset := fileSize(n.LogFile())
	if err := l.StopEtcd(); err != nil {
		return nil, fmt.Errorf("stop etcd: %w", err)
	}
	progress("etcd-outage", "etcd stopped; sampling agent pid %d for %s", pid, outageWindow)
	cpu0, err := cpuTime(pid)
	if err != nil {
		return nil, err
	}
	sched0, wake0, err := schedStat(pid)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := sleepCtx(ctx, outageWindow); err != nil {
		return nil, err
	}
	cpu1, err := cpuTime(pid)
	if err != nil {
		return nil, fmt.Errorf("agent gone during the outage: %w", err)
	}
	sched1, wake1, err := schedStat(pid)
	if err != nil {
		return nil, err
	}
	window := time.Since(start)
	during := logLinesSince(n.LogFile(), offset)
	if err := l.StartEtcd(ctx); err != nil {
		return nil, fmt.Errorf("restart etcd: %w", err)
	}
	back := "no \"etcd reachable again\" line within 15 s of the restart"
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		if strings.Contains(strings.Join(logLinesSince(n.LogFile(), offset), "\n"), "etcd reachable again") {
			back = "reported etcd back after the restart"
			break
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	if n.AgentPID() != pid {
		return nil, fmt.Errorf("agent restarted during the outage")
	}
	share := 100 * (cpu1 - cpu0).Seconds() / window.Seconds()
	return []Row{{
		Figure: "agent CPU during etcd outage", Value: share, Unit: "% of a core", Target: "< 5 %", Met: met(share < 5),
		How: fmt.Sprintf("node1's agent in a 2-node proactive lab, etcd stopped for %s; utime+stime over the outage from /proc/PID/stat", outageWindow.Round(time.Second)),
		Note: fmt.Sprintf("%.2f s CPU (10 ms ticks; schedstat %.1f ms), %d wake-ups, %d log lines during the outage (%d warnings); %s",
			(cpu1 - cpu0).Seconds(), millis(sched1-sched0), wake1-wake0, len(during), countWarn(during), back),
	}}, nil
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// logLinesSince returns the lines of path after offset.
func logLinesSince(path string, offset int64) []string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) <= offset {
		return nil
	}
	s := strings.TrimRight(string(b[offset:]), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func countWarn(lines []string) int {
	k := 0
	for _, l := range lines {
		if strings.Contains(l, "level=WARN") {
			k++
		}
	}
	return k
}
