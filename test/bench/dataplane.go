package main

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/weftnet/weft/test/lab"
)

// dataPath is one lab the data plane figure measures.
type dataPath struct {
	name   string  // "vxlan" or "DirectRouting"
	direct bool    // net config with "DirectRouting":true
	target float64 // minimum pod↔pod / node↔node ratio
}

var dataPaths = []dataPath{{"vxlan", false, 0.6}, {"DirectRouting", true, 0.95}}

var dataStreams = []int{1, 4}

// dataRounds is how many underlay and pod runs alternate per stream count;
// the ratio is of the medians, since one short run on shared cores varies
// widely, the more so with more streams.
const dataRounds = 3

// dataLab is a two-node lab with one pod per node.
type dataLab struct {
	l          *lab.Lab
	n1, n2     *lab.Node
	pod1, pod2 *lab.Pod
}

// benchDataPlane compares pod↔pod TCP throughput across two nodes with the
// underlay node↔node throughput measured in the same lab, right before:
// iperf3 -t 3 (server in the target netns, client in the source netns, -J),
// 1 and 4 streams, over VXLAN and with DirectRouting (both nodes on one L2
// switch, so pod traffic is routed over the underlay unencapsulated).
func benchDataPlane(ctx context.Context, env Env) ([]Row, error) {
	bin, err := iperf3Path()
	if err != nil {
		return nil, err
	}
	var rows []Row
	for _, p := range dataPaths {
		r, err := measurePath(ctx, env, bin, p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

func measurePath(ctx context.Context, env Env, bin string, p dataPath) ([]Row, error) {
	d, err := newDataLab(ctx, env, p.direct)
	if err != nil {
		return nil, err
	}
	defer closeLab(d.l)
	if err := d.checkPath(p.direct); err != nil {
		return nil, err
	}
	var rows []Row
	for _, streams := range dataStreams {
		progress("data-plane", "%s, %d stream(s)", p.name, streams)
		under, pods, err := d.alternate(ctx, bin, streams)
		if err != nil {
			return nil, err
		}
		ratio := median(pods) / median(under)
		rows = append(rows, Row{
			Figure: fmt.Sprintf("data plane %s %d stream(s)", p.name, streams), Value: ratio, Unit: "× underlay",
			Target: fmt.Sprintf(">= %.2f×", p.target), Met: met(ratio >= p.target),
			How: fmt.Sprintf("iperf3 -t %d -P %d -J, pod↔pod across 2 nodes vs node↔node in the same lab, %d alternated runs each, ratio of medians",
				iperfSeconds, streams, dataRounds),
			Note: fmt.Sprintf("pods %s Gbit/s, underlay %s Gbit/s", gbits(pods), gbits(under)),
		})
	}
	return rows, nil
}

// newDataLab builds the lab; with direct the net config asks for
// DirectRouting before the nodes start.
func newDataLab(ctx context.Context, env Env, direct bool) (d *dataLab, err error) {
	d = &dataLab{}
	if d.l, err = newLab(ctx, env, lab.Options{}); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			closeLab(d.l)
		}
	}()
	if direct {
		conf := `{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1,"DirectRouting":true}}`
		if err := putConfig(ctx, d.l, conf); err != nil {
			return nil, err
		}
	}
	if d.n1, err = d.l.AddNode(ctx, d.l.NodeDefaults()); err != nil {
		return nil, err
	}
	if d.n2, err = d.l.AddNode(ctx, d.l.NodeDefaults()); err != nil {
		return nil, err
	}
	if d.pod1, err = d.l.AddPod(ctx, d.n1, "iperf1"); err != nil {
		return nil, err
	}
	if d.pod2, err = d.l.AddPod(ctx, d.n2, "iperf2"); err != nil {
		return nil, err
	}
	return d, nil
}

// checkPath verifies node1 routes pod2 the expected way: via node2's
// underlay address on eth0 (DirectRouting) or via flannel.1.
func (d *dataLab) checkPath(direct bool) error {
	h, err := d.n1.NS.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	routes, err := h.RouteGet(d.pod2.IP.AsSlice())
	if err != nil || len(routes) == 0 {
		return fmt.Errorf("route to %s on %s: %v", d.pod2.IP, d.n1.Name, err)
	}
	link, err := h.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return fmt.Errorf("route to %s on %s: link %d: %w", d.pod2.IP, d.n1.Name, routes[0].LinkIndex, err)
	}
	gw, _ := netip.AddrFromSlice(routes[0].Gw)
	dev := link.Attrs().Name
	switch {
	case direct && (dev != "eth0" || gw.Unmap() != d.n2.IP):
		return fmt.Errorf("DirectRouting: %s routes %s via %s dev %s, want via %s dev eth0", d.n1.Name, d.pod2.IP, gw, dev, d.n2.IP)
	case !direct && dev != "flannel.1":
		return fmt.Errorf("%s routes %s via %s dev %s, want dev flannel.1", d.n1.Name, d.pod2.IP, gw, dev)
	}
	return nil
}

// alternate runs underlay and pod tests in turn, dataRounds times.
func (d *dataLab) alternate(ctx context.Context, bin string, streams int) (under, pods []float64, err error) {
	for range dataRounds {
		u, err := iperf(ctx, bin, d.n1.NS, d.n2.NS, d.n2.IP, streams)
		if err != nil {
			return nil, nil, err
		}
		p, err := iperf(ctx, bin, d.pod1.NS, d.pod2.NS, d.pod2.IP, streams)
		if err != nil {
			return nil, nil, err
		}
		under, pods = append(under, u), append(pods, p)
	}
	return under, pods, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// gbits renders bit/s values as "12.3, 12.9".
func gbits(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.2f", x/1e9)
	}
	return strings.Join(s, ", ")
}
