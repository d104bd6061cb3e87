package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/test/lab"
)

// printNodes prints name, public IP, subnet (subnet.env) and VtepMAC (lease).
func printNodes(ctx context.Context, out io.Writer, l *lab.Lab) error {
	fmt.Fprintln(out, "\nNODES")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tNETNS\tPUBLIC IP\tSUBNET\tVTEP MAC")
	for _, n := range l.Nodes() {
		subnet, err := n.Subnet()
		if err != nil {
			return err
		}
		lk, err := n.Lease(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Name, n.NS.Name, lk.PublicIP, subnet, lk.VtepMAC)
	}
	return tw.Flush()
}

func printPods(out io.Writer, pods []*lab.Pod) {
	fmt.Fprintln(out, "\nPODS")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tNODE\tIP\tNETNS")
	for _, p := range pods {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", podName(p), p.Node.Name, p.IP, p.NS.Name)
	}
	_ = tw.Flush()
}

func podName(p *lab.Pod) string { return p.Node.Name + "/" + p.Name }

// pingMatrix pings every pod from every other pod (3 echoes each) and prints
// the mean RTT per pair; it returns the number of pairs with a lost echo.
func pingMatrix(ctx context.Context, out io.Writer, l *lab.Lab, pods []*lab.Pod) int {
	fmt.Fprintln(out, "\nPING MATRIX (3 echoes per pair, mean RTT; row = from, column = to)")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "\t")
	for _, to := range pods {
		fmt.Fprintf(tw, "%s\t", podName(to))
	}
	fmt.Fprintln(tw)
	failed := 0
	for _, from := range pods {
		fmt.Fprintf(tw, "%s\t", podName(from))
		for _, to := range pods {
			if from == to {
				fmt.Fprint(tw, "-\t")
				continue
			}
			r, err := l.Ping(ctx, from.NS, to.IP, 3, 20*time.Millisecond)
			switch {
			case err != nil:
				failed++
				fmt.Fprint(tw, "ERROR\t")
			case r.Loss() > 0:
				failed++
				fmt.Fprintf(tw, "LOST %d/%d\t", r.Loss(), r.Sent)
			default:
				fmt.Fprintf(tw, "%.3fms\t", float64(r.AvgRTT().Microseconds())/1000)
			}
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush()
	return failed
}

// printLeases prints what `etcdctl get --prefix <prefix>/subnets` would:
// each key on one line, its value on the next.
func printLeases(ctx context.Context, out io.Writer, l *lab.Lab) error {
	key := l.Prefix() + "/subnets"
	fmt.Fprintf(out, "\nLEASES (etcdctl --endpoints %s get --prefix %s)\n", l.EtcdEndpoint(), key)
	resp, err := l.Etcd().Get(ctx, key, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("get %s: %w", key, err)
	}
	for _, kv := range resp.Kvs {
		fmt.Fprintf(out, "%s\n%s\n", kv.Key, kv.Value)
	}
	return nil
}
