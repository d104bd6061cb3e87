package main

import (
	"context"
	"fmt"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// Idle windows: RSS is read 30 s into the 60 s CPU window.
const (
	idleSettle = 2 * time.Second
	idleRSSAt  = 30 * time.Second
	idleWindow = 60 * time.Second
)

// idleSample is what the idle window measured.
type idleSample struct {
	mem     memStat
	cpu     time.Duration // utime+stime (10 ms ticks)
	sched   time.Duration // on-CPU time from schedstat (ns)
	wakeups int64         // voluntary context switches
}

// benchIdle measures what an idle agent costs: a two-node lab (so node1 has
// a peer, a lease to keep alive and its periodic reconcile), nothing
// changing. After a short settle, VmRSS of node1's agent 30 s into the
// window and its utime+stime over 60 s, from /proc.
func benchIdle(ctx context.Context, env Env) ([]Row, error) {
	l, err := newLab(ctx, env, lab.Options{Nodes: 2})
	if err != nil {
		return nil, err
	}
	defer closeLab(l)
	n := l.Nodes()[0]
	if err := sleepCtx(ctx, idleSettle); err != nil {
		return nil, err
	}
	s, err := sampleIdle(ctx, n)
	if err != nil {
		return nil, err
	}
	how := "node1's agent in a 2-node proactive lab (--subnet-lease-ttl 1m, resync 1m), nothing changing"
	return []Row{
		{Figure: "idle RSS", Value: megabytes(s.mem.RSS), Unit: "MB", Target: "< 20 MB", Met: met(s.mem.RSS < 20e6),
			How: how + fmt.Sprintf("; VmRSS %s into the window", idleRSSAt), Note: s.mem.note()},
		{Figure: "idle CPU", Value: s.cpu.Seconds(), Unit: "s", Target: "< 0.05 s", Met: met(s.cpu < 50*time.Millisecond),
			How: how + fmt.Sprintf("; utime+stime over %s from /proc/PID/stat", idleWindow),
			Note: fmt.Sprintf("10 ms ticks; schedstat (ns) says %.1f ms, %d wake-ups (voluntary context switches)",
				millis(s.sched), s.wakeups)},
	}, nil
}

// sampleIdle watches n's agent for idleWindow.
func sampleIdle(ctx context.Context, n *lab.Node) (idleSample, error) {
	var s idleSample
	pid := n.AgentPID()
	cpu0, err := cpuTime(pid)
	if err != nil {
		return s, err
	}
	sched0, wake0, err := schedStat(pid)
	if err != nil {
		return s, err
	}
	start := time.Now()
	progress("idle", "sampling agent pid %d for %s", pid, idleWindow)
	if err := sleepCtx(ctx, idleRSSAt); err != nil {
		return s, err
	}
	if s.mem, err = readMem(pid); err != nil {
		return s, err
	}
	if err := sleepCtx(ctx, idleWindow-time.Since(start)); err != nil {
		return s, err
	}
	cpu1, err := cpuTime(pid)
	if err != nil {
		return s, err
	}
	sched1, wake1, err := schedStat(pid)
	if err != nil {
		return s, err
	}
	if n.AgentPID() != pid {
		return s, fmt.Errorf("agent restarted during the idle window")
	}
	s.cpu, s.sched, s.wakeups = cpu1-cpu0, sched1-sched0, wake1-wake0
	return s, nil
}
