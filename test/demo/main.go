package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// budget bounds the whole demo, which is meant to finish within a minute.
const budget = 55 * time.Second

type config struct {
	binDir  string
	nodes   int
	pods    int
	etcd    string
	family  string
	keep    bool
	verbose bool
}

func main() {
	var c config
	flag.StringVar(&c.binDir, "bin-dir", "bin", "directory with the built weftd and weft (make build)")
	flag.IntVar(&c.nodes, "nodes", 3, "number of nodes")
	flag.IntVar(&c.pods, "pods", 2, "pods per node")
	flag.StringVar(&c.etcd, "etcd", lab.EtcdEmbedded, "etcd server: embedded (weft-etcd) or debian (/usr/bin/etcd)")
	flag.StringVar(&c.family, "family", string(lab.Dual), "pod network and underlay family: ipv4, dual or ipv6")
	flag.BoolVar(&c.verbose, "v", false, "log the lab's steps to stderr")
	flag.Parse()
	c.keep = os.Getenv("DEMO_KEEP") == "1"
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, c, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config, out io.Writer) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces): run `sudo make demo`")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	level := slog.LevelWarn
	if c.verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	fam := lab.Family(c.family)
	fmt.Fprintf(out, "weft demo: %d nodes x %d pods, %s etcd, %s\n", c.nodes, c.pods, c.etcd, familyName(fam))
	l, err := lab.New(ctx, lab.Options{Nodes: c.nodes, BinDir: c.binDir, Etcd: c.etcd, IPMasq: true, Keep: c.keep, Log: log,
		Overlay: fam, Underlay: fam})
	if err != nil {
		return fmt.Errorf("bring up the lab: %w", err)
	}
	defer func() {
		if c.keep && ctx.Err() == nil {
			msg, derr := l.Detach()
			fmt.Fprintf(out, "\nDEMO_KEEP=1: %s", msg)
			err = errors.Join(err, derr)
			return
		}
		err = errors.Join(err, l.Close())
		fmt.Fprintf(out, "\ntorn down; took %s\n", time.Since(start).Round(100*time.Millisecond))
	}()
	pods, err := addPods(ctx, l, c.pods)
	if err != nil {
		return err
	}
	if err := printNodes(ctx, out, l, fam); err != nil {
		return err
	}
	printPods(out, pods, fam)
	failed, pairs := 0, 0
	for _, f := range fam.Singles() {
		failed += pingMatrix(ctx, out, l, pods, f)
		pairs += len(pods) * (len(pods) - 1)
	}
	if err := printLeases(ctx, out, l); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d pod pairs did not answer every ping", failed)
	}
	fmt.Fprintf(out, "\nall %d pod pairs answered every ping\n", pairs)
	return nil
}

// addPods attaches perNode pods to every node through the weft CNI plugin.
func addPods(ctx context.Context, l *lab.Lab, perNode int) ([]*lab.Pod, error) {
	var pods []*lab.Pod
	for _, n := range l.Nodes() {
		for i := 1; i <= perNode; i++ {
			p, err := l.AddPod(ctx, n, fmt.Sprintf("pod%d", i))
			if err != nil {
				return nil, err
			}
			pods = append(pods, p)
		}
	}
	return pods, nil
}

func familyName(f lab.Family) string {
	switch f {
	case lab.Dual:
		return "dual stack (IPv4 over flannel.1, IPv6 over flannel-v6.1)"
	case lab.IPv6:
		return "IPv6-only (flannel-v6.1 over an IPv6 underlay)"
	}
	return "IPv4"
}
