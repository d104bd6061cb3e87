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
	name   string  // "vxlan", "vxlan6" or "DirectRouting"
	direct bool    // net config with "DirectRouting":true
	ipv6   bool    // IPv6-only underlay and network: flannel-v6.1, the pods' IPv6 addresses
	target float64 // minimum pod↔pod / node↔node ratio
}

// dataPaths in the order of the table; vxlan6's rows go beside vxlan's (see
// benchDataPlane).
var dataPaths = []dataPath{
	{name: "vxlan", target: 0.6},
	{name: "vxlan6", ipv6: true, target: 0.6},
	{name: "DirectRouting", direct: true, target: 0.95},
}

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
// 1 and 4 streams, over VXLAN (flannel.1 over an IPv4 underlay), over VXLAN
// on IPv6 (vxlan6: flannel-v6.1 over an IPv6 underlay, an IPv6-only
// network, the pods' and nodes' IPv6 addresses) and with DirectRouting
// (both nodes on one L2 switch, so pod traffic is routed over the underlay
// unencapsulated). Each vxlan6 row follows the vxlan row of the same stream
// count.
func benchDataPlane(ctx context.Context, env Env) ([]Row, error) {
	bin, err := iperf3Path()
	if err != nil {
		return nil, err
	}
	byPath := map[string][]Row{}
	for _, p := range dataPaths {
		r, err := measurePath(ctx, env, bin, p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
		byPath[p.name] = r
	}
	var rows []Row
	for i := range dataStreams {
		rows = append(rows, byPath["vxlan"][i], byPath["vxlan6"][i])
	}
	return append(rows, byPath["DirectRouting"]...), nil
}

func measurePath(ctx context.Context, env Env, bin string, p dataPath) ([]Row, error) {
	d, err := newDataLab(ctx, env, p)
	if err != nil {
		return nil, err
	}
	defer closeLab(d.l)
	if err := d.checkPath(p); err != nil {
		return nil, err
	}
	over := ""
	if p.ipv6 {
		over = " (IPv6 addresses, IPv6 underlay)"
	}
	var rows []Row
	for _, streams := range dataStreams {
		progress("data-plane", "%s, %d stream(s)", p.name, streams)
		under, pods, err := d.alternate(ctx, bin, streams, p.ipv6)
		if err != nil {
			return nil, err
		}
		ratio := median(pods) / median(under)
		rows = append(rows, Row{
			Figure: fmt.Sprintf("data plane %s %d stream(s)", p.name, streams), Value: ratio, Unit: "× underlay",
			Target: fmt.Sprintf(">= %.2f×", p.target), Met: met(ratio >= p.target),
			How: fmt.Sprintf("iperf3 -t %d -P %d -J, pod↔pod across 2 nodes vs node↔node in the same lab%s, %d alternated runs each, ratio of medians",
				iperfSeconds, streams, over, dataRounds),
			Note: fmt.Sprintf("pods %s Gbit/s, underlay %s Gbit/s", gbits(pods), gbits(under)),
		})
	}
	return rows, nil
}

// newDataLab builds the lab: IPv6-only (underlay and network) for an ipv6
// path; for a direct one the net config asks for DirectRouting before the
// nodes start.
func newDataLab(ctx context.Context, env Env, p dataPath) (d *dataLab, err error) {
	d = &dataLab{}
	var o lab.Options
	if p.ipv6 {
		o.Overlay = lab.IPv6
	}
	if d.l, err = newLab(ctx, env, o); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			closeLab(d.l)
		}
	}()
	if p.direct {
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

// addrs are node2's underlay address and pod2's address the path measures
// (IPv6 ones for an ipv6 path).
func (d *dataLab) addrs(ipv6 bool) (node2, pod2 netip.Addr) {
	if ipv6 {
		return d.n2.IP6, d.pod2.IP6
	}
	return d.n2.IP, d.pod2.IP
}

// checkPath verifies node1 routes pod2 the expected way: via node2's
// underlay address on eth0 (DirectRouting), via flannel-v6.1 (ipv6) or via
// flannel.1.
func (d *dataLab) checkPath(p dataPath) error {
	node2, pod2 := d.addrs(p.ipv6)
	if !node2.IsValid() || !pod2.IsValid() {
		return fmt.Errorf("node2 %s, pod2 %s: want addresses of the path's family", node2, pod2)
	}
	h, err := d.n1.NS.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	routes, err := h.RouteGet(pod2.AsSlice())
	if err != nil || len(routes) == 0 {
		return fmt.Errorf("route to %s on %s: %v", pod2, d.n1.Name, err)
	}
	link, err := h.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return fmt.Errorf("route to %s on %s: link %d: %w", pod2, d.n1.Name, routes[0].LinkIndex, err)
	}
	gw, _ := netip.AddrFromSlice(routes[0].Gw)
	dev, want := link.Attrs().Name, "flannel.1"
	if p.ipv6 {
		want = "flannel-v6.1"
	}
	switch {
	case p.direct && (dev != "eth0" || gw.Unmap() != node2):
		return fmt.Errorf("DirectRouting: %s routes %s via %s dev %s, want via %s dev eth0", d.n1.Name, pod2, gw, dev, node2)
	case !p.direct && dev != want:
		return fmt.Errorf("%s routes %s via %s dev %s, want dev %s", d.n1.Name, pod2, gw, dev, want)
	}
	return nil
}

// alternate runs underlay and pod tests in turn, dataRounds times, to the
// addresses of the path's family.
func (d *dataLab) alternate(ctx context.Context, bin string, streams int, ipv6 bool) (under, pods []float64, err error) {
	node2, pod2 := d.addrs(ipv6)
	for range dataRounds {
		u, err := iperf(ctx, bin, d.n1.NS, d.n2.NS, node2, streams)
		if err != nil {
			return nil, nil, err
		}
		p, err := iperf(ctx, bin, d.pod1.NS, d.pod2.NS, pod2, streams)
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
