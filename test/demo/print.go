package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/test/lab"
)

// printNodes prints name, public addresses, subnets (subnet.env) and
// VtepMACs (lease) of the families of f.
func printNodes(ctx context.Context, out io.Writer, l *lab.Lab, f lab.Family) error {
	fmt.Fprintln(out, "\nNODES")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	head := "NAME\tNETNS"
	if f.Has4() {
		head += "\tPUBLIC IP\tSUBNET\tVTEP MAC"
	}
	if f.Has6() {
		head += "\tPUBLIC IPV6\tIPV6 SUBNET\tVTEP MAC V6"
	}
	fmt.Fprintln(tw, head)
	for _, n := range l.Nodes() {
		lk, err := n.Lease(ctx)
		if err != nil {
			return err
		}
		row := n.Name + "\t" + n.NS.Name
		if f.Has4() {
			subnet, err := n.Subnet()
			if err != nil {
				return err
			}
			row += fmt.Sprintf("\t%s\t%s\t%s", lk.PublicIP, subnet, lk.VtepMAC)
		}
		if f.Has6() {
			subnet6, err := n.Subnet6()
			if err != nil {
				return err
			}
			row += fmt.Sprintf("\t%s\t%s\t%s", lk.PublicIPv6, subnet6, lk.VtepMAC6)
		}
		fmt.Fprintln(tw, row)
	}
	return tw.Flush()
}

func printPods(out io.Writer, pods []*lab.Pod, f lab.Family) {
	fmt.Fprintln(out, "\nPODS")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tNODE\tIP\tNETNS")
	for _, p := range pods {
		var ips []string
		for _, s := range f.Singles() {
			ips = append(ips, p.Addr(s).String())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", podName(p), p.Node.Name, strings.Join(ips, ","), p.NS.Name)
	}
	_ = tw.Flush()
}

func podName(p *lab.Pod) string { return p.Node.Name + "/" + p.Name }

// pingMatrix pings every pod from every other pod over family f (3 echoes
// each) and prints the mean RTT per pair; it returns the number of pairs
// with a lost echo.
func pingMatrix(ctx context.Context, out io.Writer, l *lab.Lab, pods []*lab.Pod, f lab.Family) int {
	fmt.Fprintf(out, "\nPING MATRIX, %s (3 echoes per pair, mean RTT; row = from, column = to)\n", f)
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
			r, err := l.Ping(ctx, from.NS, to.Addr(f), 3, 20*time.Millisecond)
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
