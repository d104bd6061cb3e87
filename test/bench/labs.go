package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// Helpers shared by the figures that run a lab (package test/lab): nodes in
// network namespaces running the built weftd against an etcd of their own.
// Every figure builds its own lab and closes it (also on error and Ctrl-C:
// ctx ends, the figure returns, the deferred Close removes everything).

// newLab builds a lab from the built binaries in env.BinDir.
func newLab(ctx context.Context, env Env, o lab.Options) (*lab.Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root (network namespaces)")
	}
	o.BinDir = env.BinDir
	l, err := lab.New(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("build lab: %w", err)
	}
	return l, nil
}

// closeLab closes l and reports a failure to remove it on stderr (a figure's
// numbers stay valid when only the clean-up failed).
func closeLab(l *lab.Lab) {
	if err := l.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: remove lab %s: %v\n", l.NamePrefix(), err)
	}
}

// putConfig overwrites <prefix>/config before nodes are added (the lab
// writes Network with SubnetLen 24 and no other backend option).
func putConfig(ctx context.Context, l *lab.Lab, conf string) error {
	if _, err := l.Etcd().Put(ctx, l.Prefix()+"/config", conf); err != nil {
		return fmt.Errorf("put %s/config: %w", l.Prefix(), err)
	}
	return nil
}

// memStat is the resident memory of a process from /proc/PID/status.
type memStat struct {
	RSS, Anon, File int64 // VmRSS, RssAnon, RssFile (file: mostly the binary's pages, shared)
}

func (m memStat) note() string {
	return fmt.Sprintf("RssAnon %.1f MB, RssFile %.1f MB (pages of the weftd binary, shared with other weftd processes)",
		megabytes(m.Anon), megabytes(m.File))
}

// readMem reads VmRSS, RssAnon and RssFile of pid.
func readMem(pid int) (memStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return memStat{}, fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	var m memStat
	fields := map[string]*int64{"VmRSS:": &m.RSS, "RssAnon:": &m.Anon, "RssFile:": &m.File}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line) // "VmRSS:   12345 kB"
		if len(f) != 3 || f[2] != "kB" || fields[f[0]] == nil {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return memStat{}, fmt.Errorf("%s of pid %d: %w", f[0], pid, err)
		}
		*fields[f[0]] = kb << 10
	}
	if m.RSS == 0 {
		return memStat{}, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return m, nil
}

// schedStat sums, over pid's threads, the nanoseconds on CPU
// (/proc/PID/task/*/schedstat) and the voluntary context switches (wake-ups).
func schedStat(pid int) (time.Duration, int64, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, fmt.Errorf("list threads of pid %d: %w", pid, err)
	}
	var cpu time.Duration
	var wakeups int64
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if err != nil {
			continue // thread exited
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			cpu += time.Duration(ns)
		}
		st, err := os.ReadFile(dir + "/" + t.Name() + "/status")
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(st)) {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				wakeups += n
			}
		}
	}
	return cpu, wakeups, nil
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat (100
// on every Linux architecture Go supports).
const clockTicks = 100

// cpuTime is utime+stime of pid from /proc/PID/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	// Fields after the command name (which may hold spaces) start at ")".
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// megabytes: RSS targets are in MB (10^6 bytes), the stricter reading.
func megabytes(b int64) float64 { return float64(b) / 1e6 }

// quantile is the nearest-rank q-quantile (0 < q ≤ 1) of d.
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(len(s)-1, rank))]
}

func millis(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// progress prints a line on stderr while a figure runs.
func progress(figure, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench %s: %s\n", figure, fmt.Sprintf(format, args...))
}
