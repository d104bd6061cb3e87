package masq

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
	"github.com/weftnet/weft/test/nettest"
	"github.com/weftnet/weft/test/testlog"
)

// TestForwardExprs pins the encoding to what iptables-nft 1.8.9 writes for
// `iptables -A FORWARD -s|-d <prefix> -m comment --comment C -j ACCEPT`, as shown by
// `nft --debug=netlink list ruleset`.
func TestForwardExprs(t *testing.T) {
	load := func(off, n uint32) *expr.Payload {
		return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n}
	}
	eq := func(b ...byte) *expr.Cmp { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b} }
	mask := func(b ...byte) *expr.Bitwise {
		return &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(b)), Mask: b, Xor: make([]byte, len(b))}
	}
	for _, tc := range []struct {
		network string
		rule    int
		addr    []expr.Any
	}{
		// [ payload load 2b @ network header + 12 => reg 1 ] [ cmp eq reg 1 0x0000f40a ]
		{"10.244.0.0/16", 0, []expr.Any{load(12, 2), eq(10, 244)}},
		{"10.244.0.0/16", 1, []expr.Any{load(16, 2), eq(10, 244)}},
		// [ payload load 4b @ network header + 12 => reg 1 ]
		// [ bitwise reg 1 = ( reg 1 & 0x0000f0ff ) ^ 0x00000000 ] [ cmp eq reg 1 0x0000600a ]
		{"10.96.0.0/12", 0, []expr.Any{load(12, 4), mask(255, 240, 0, 0), eq(10, 96, 0, 0)}},
		{"10.1.2.3/32", 1, []expr.Any{load(16, 4), eq(10, 1, 2, 3)}},
		// [ payload load 6b @ network header + 8 => reg 1 ] [ cmp eq reg 1 0x100000fd 0x00000000 ]
		{"fd00:10::/48", 0, []expr.Any{load(8, 6), eq(0xfd, 0, 0, 0x10, 0, 0)}},
		{"fd00:10::/50", 1, []expr.Any{load(24, 16),
			mask(255, 255, 255, 255, 255, 255, 192, 0, 0, 0, 0, 0, 0, 0, 0, 0),
			eq(0xfd, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)}},
	} {
		network := netip.MustParsePrefix(tc.network)
		c := xt.Comment(forwardComments[tc.rule])
		want := append(tc.addr, &expr.Match{Name: "comment", Info: &c}, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictAccept})
		got := forwardExprs(network, tc.rule)
		if !reflect.DeepEqual(got, want) || !sameExprs(got, want) {
			t.Errorf("forwardExprs(%v, %d) = %s, want %s", network, tc.rule, dump(got), dump(want))
		}
		m, n, ok := matchPrefix(got, network.Addr().Is6())
		if !ok || n != len(tc.addr) || m.Prefix != network || m.Dst != (tc.rule == 1) {
			t.Errorf("matchPrefix(forwardExprs(%v, %d)) = %+v, %d, %v", network, tc.rule, m, n, ok)
		}
		// nft's own encoding of a prefix (the masquerade table's) decodes as well.
		so, _, size := addrOffsets(network.Addr().Is6())
		full := addrMatch{Prefix: network}.encode(so, size)
		if m, _, ok := matchPrefix(full, network.Addr().Is6()); !ok || m.Prefix != network || m.Dst {
			t.Errorf("matchPrefix(full-width %v) = %+v, %v", network, m, ok)
		}
	}
}

func dump(ex []expr.Any) string {
	var b strings.Builder
	for _, e := range ex {
		b.WriteString(strings.TrimPrefix(reflect.TypeOf(e).String(), "*expr."))
		if p, ok := e.(*expr.Payload); ok {
			b.WriteString("@" + strings.Repeat("+", int(p.Offset)) + "/" + strings.Repeat("#", int(p.Len)))
		}
		b.WriteString(" ")
	}
	return b.String()
}

func TestPlanForward(t *testing.T) {
	nw := netip.MustParsePrefix("10.244.0.0/16")
	old := netip.MustParsePrefix("10.96.0.0/12")
	rule := func(h uint64, ex []expr.Any) *nftables.Rule { return &nftables.Rule{Handle: h, Exprs: ex} }
	src, dst := forwardExprs(nw, 0), forwardExprs(nw, 1)
	operator := rule(1, []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}})
	// An operator's copy of weft's rule without weft's comment is not weft's.
	operatorCopy := rule(2, append(iptAddr(nw, false), &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictAccept}))
	byNft := rule(9, append(iptAddr(nw, false), &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictAccept}))
	byNft.UserData = userdata.AppendString(nil, userdata.TypeComment, forwardComments[0])
	one, both := []netip.Prefix{nw}, []netip.Prefix{nw, old}
	for _, tc := range []struct {
		name     string
		rules    []*nftables.Rule
		networks []netip.Prefix
		del      []uint64
		add      []fwdRule
		why      string
	}{
		{"empty chain", nil, one, nil, []fwdRule{{nw, 0}, {nw, 1}}, ""},
		{"in place", []*nftables.Rule{operator, rule(3, src), operatorCopy, rule(4, dst)}, one, nil, nil, ""},
		{"one missing", []*nftables.Rule{operator, rule(4, dst)}, one, nil, []fwdRule{{nw, 0}}, ""},
		{"duplicate", []*nftables.Rule{rule(3, src), rule(4, dst), rule(5, src)}, one, []uint64{5}, nil, "duplicate"},
		{"other network", []*nftables.Rule{rule(3, forwardExprs(old, 0)), rule(4, dst)}, one, []uint64{3}, []fwdRule{{nw, 0}}, "for network 10.96.0.0/12"},
		{"swapped comment", []*nftables.Rule{rule(3, append(iptAddr(nw, true), src[2:]...)), rule(4, dst)}, one, []uint64{3}, []fwdRule{{nw, 0}}, "changed"},
		{"nft userdata comment", []*nftables.Rule{byNft, rule(4, dst)}, one, []uint64{9}, []fwdRule{{nw, 0}}, "changed"},
		{"off", []*nftables.Rule{operator, rule(3, src), operatorCopy, rule(4, dst)}, nil, []uint64{3, 4}, nil, "not wanted"},
		// Two networks of one family: both keep their accepts; one dropped loses them.
		{"two networks", []*nftables.Rule{rule(3, src), rule(4, dst), rule(5, forwardExprs(old, 1))}, both, nil, []fwdRule{{old, 0}}, ""},
		{"network dropped", []*nftables.Rule{rule(3, src), rule(4, dst), rule(5, forwardExprs(old, 0)), rule(6, forwardExprs(old, 1))}, one, []uint64{5, 6}, nil, "for network 10.96.0.0/12"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planForward(tc.rules, tc.networks)
			var del []uint64
			for _, r := range p.del {
				del = append(del, r.Handle)
			}
			if !slices.Equal(del, tc.del) || !slices.Equal(p.add, tc.add) {
				t.Fatalf("plan deletes %v appends %v, want %v and %v", del, p.add, tc.del, tc.add)
			}
			if tc.why != "" && !strings.Contains(strings.Join(p.why, "; "), tc.why) {
				t.Fatalf("reasons %q lack %q", p.why, tc.why)
			}
		})
	}
}

// logBuffer is a slog handler target that also shows the log in the test output.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	out io.Writer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	return l.out.Write(p)
}

// take returns the records logged at Info or above since the last call.
func (l *logBuffer) take() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var keep []string
	for line := range strings.SplitSeq(l.buf.String(), "\n") {
		if strings.Contains(line, "level=INFO") || strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			keep = append(keep, line)
		}
	}
	l.buf.Reset()
	return strings.Join(keep, "\n")
}

func captureLog(t *testing.T) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{out: t.Output()}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// iptablesNFT skips the test unless `iptables` is the nf_tables variant.
func iptablesNFT(t *testing.T, n *nettest.NS) {
	t.Helper()
	if out, err := n.Exec(t, "iptables", "-V"); err != nil || !strings.Contains(out, "nf_tables") {
		t.Skipf("iptables is not iptables-nft: %v %s", err, out)
	}
}

// ipt runs an iptables-family command inside n and fails the test on error.
func ipt(t *testing.T, n *nettest.NS, cmd string, args ...string) string {
	t.Helper()
	out, err := n.Exec(t, cmd, args...)
	if err != nil {
		t.Fatalf("%s %s in %s: %v: %s", cmd, strings.Join(args, " "), n.Name, err, out)
	}
	return out
}

// wantLines fails unless text (iptables -S output, with its warnings if any) has
// exactly the lines want, in any order.
func wantLines(t *testing.T, what, text string, want ...string) {
	t.Helper()
	got := strings.Split(strings.TrimSpace(text), "\n")
	slices.Sort(got)
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\n%s\nwant exactly (any order):\n%s", what, text, strings.Join(want, "\n"))
	}
}

// forwardHandles lists the handles of the rules in ip filter FORWARD.
func forwardHandles(t *testing.T, fd int) []uint64 {
	t.Helper()
	return chainHandles(t, fd, nftables.TableFamilyIPv4, ForwardTable, ForwardChain)
}

const (
	srcRule = `-A FORWARD -s 10.244.0.0/16 -m comment --comment "weft: forward from pod network" -j ACCEPT`
	dstRule = `-A FORWARD -d 10.244.0.0/16 -m comment --comment "weft: forward to pod network" -j ACCEPT`
)

// TestForwardTraffic: Docker's FORWARD policy DROP kills pod → pod traffic through
// the node until EnsureForward accepts the pod Network in iptables-nft's chain; the
// rules read back cleanly with iptables, are repaired, and DeleteForward removes only
// them. A foreign drop chain still blocks, and ForwardBlockers names it.
func TestForwardTraffic(t *testing.T) {
	nettest.Privileged(t)
	tp := newTopo(t)
	iptablesNFT(t, tp.node)
	nsh := openHost(t, tp.node)
	fd := nsh.Fd()
	log, logs := captureLog(t)
	network := podRules.Network
	pod2 := listenUDP(t, tp.pod2, "10.244.2.2:9000")

	if !ping(t, tp.pod, "10.244.2.2") {
		t.Fatal("pod cannot ping pod2 before any firewall: the test topology is broken")
	}
	// The node's own netns only: Docker's policy, and an operator's rule that must stay.
	ipt(t, tp.node, "iptables", "-P", "FORWARD", "DROP")
	ipt(t, tp.node, "iptables", "-A", "FORWARD", "-s", "198.18.0.2/32", "-m", "comment", "--comment", "operator", "-j", "ACCEPT")
	const operatorRule = `-A FORWARD -s 198.18.0.2/32 -m comment --comment operator -j ACCEPT`
	if ping(t, tp.pod, "10.244.2.2") {
		t.Fatal("pod pings pod2 through a FORWARD policy DROP: the drop is not in effect")
	}
	if bs, err := ForwardBlockers(nsh, network); err != nil || len(bs) != 1 || bs[0].String() != "table ip filter chain FORWARD (hook forward, priority 0): policy drop" {
		t.Fatalf("ForwardBlockers before EnsureForward = %v, %v; want the ip filter FORWARD policy", bs, err)
	}

	if err := EnsureForward(nsh, []netip.Prefix{network}, log); err != nil {
		t.Fatalf("EnsureForward: %v", err)
	}
	if !ping(t, tp.pod, "10.244.2.2") {
		t.Fatal("pod cannot ping pod2 after EnsureForward")
	}
	wantSource(t, "pod → pod2 through FORWARD DROP", sourceSeen(t, tp.pod, "", "10.244.2.2:9000", 0, pod2), "10.244.1.2")
	if l := logs.take(); !strings.Contains(l, "level=INFO msg=\"forward accept rules installed\"") {
		t.Errorf("first EnsureForward logged %q, want an Info install", l)
	}
	// iptables parses weft's rules as its own: exactly these lines, no warning about an
	// incompatible table or unsupported expressions on stdout or stderr.
	wantLines(t, "iptables -S FORWARD", ipt(t, tp.node, "iptables", "-S", "FORWARD"),
		"-P FORWARD DROP", operatorRule, srcRule, dstRule)
	if save := ipt(t, tp.node, "iptables-save"); !strings.Contains(save, srcRule) || !strings.Contains(save, dstRule) ||
		strings.Contains(save, "ncompatible") || strings.Contains(save, "nsupported") || strings.Contains(save, "Warning") {
		t.Fatalf("iptables-save:\n%s", save)
	}
	if bs, err := ForwardBlockers(nsh, network); err != nil || len(bs) != 0 {
		t.Fatalf("ForwardBlockers after EnsureForward = %v, %v; want none", bs, err)
	}

	// Idempotent: nothing rewritten, nothing logged above Debug.
	before := forwardHandles(t, fd)
	if err := EnsureForward(nsh, []netip.Prefix{network}, log); err != nil {
		t.Fatalf("second EnsureForward: %v", err)
	}
	if after := forwardHandles(t, fd); !slices.Equal(before, after) || len(after) != 3 {
		t.Fatalf("rule handles %v before the second EnsureForward, %v after; want the same 3", before, after)
	}
	if l := logs.take(); l != "" {
		t.Errorf("EnsureForward with the rules in place logged %q", l)
	}

	// Repair: one of weft's rules deleted by hand comes back, and is logged at Warn.
	ipt(t, tp.node, "iptables", "-D", "FORWARD", "-d", "10.244.0.0/16", "-m", "comment", "--comment", "weft: forward to pod network", "-j", "ACCEPT")
	if err := EnsureForward(nsh, []netip.Prefix{network}, log); err != nil {
		t.Fatalf("EnsureForward after a deleted rule: %v", err)
	}
	wantLines(t, "iptables -S FORWARD after repair", ipt(t, tp.node, "iptables", "-S", "FORWARD"),
		"-P FORWARD DROP", operatorRule, srcRule, dstRule)
	if l := logs.take(); !strings.Contains(l, "level=WARN msg=\"forward accept rules repaired\"") || !strings.Contains(l, "-d 10.244.0.0/16") {
		t.Errorf("repair logged %q, want a Warn naming the -d rule", l)
	}
	// A rule of weft's changed by hand (same comment, other prefix) is replaced.
	ipt(t, tp.node, "iptables", "-R", "FORWARD", "2", "-s", "10.0.0.0/8", "-m", "comment", "--comment", "weft: forward from pod network", "-j", "ACCEPT")
	if err := EnsureForward(nsh, []netip.Prefix{network}, log); err != nil {
		t.Fatalf("EnsureForward after a changed rule: %v", err)
	}
	wantLines(t, "iptables -S FORWARD after a changed rule", ipt(t, tp.node, "iptables", "-S", "FORWARD"),
		"-P FORWARD DROP", operatorRule, srcRule, dstRule)
	if l := logs.take(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "for network 10.0.0.0/8") {
		t.Errorf("replacing a changed rule logged %q, want a Warn naming 10.0.0.0/8", l)
	}
	// A flushed chain (iptables-restore, firewall reload) gets both back.
	ipt(t, tp.node, "iptables", "-F", "FORWARD")
	if ping(t, tp.pod, "10.244.2.2") {
		t.Fatal("pod pings pod2 after the FORWARD chain was flushed")
	}
	if err := EnsureForward(nsh, []netip.Prefix{network}, log); err != nil {
		t.Fatalf("EnsureForward after a flush: %v", err)
	}
	if !ping(t, tp.pod, "10.244.2.2") {
		t.Fatal("pod cannot ping pod2 after EnsureForward repaired a flushed chain")
	}
	ipt(t, tp.node, "iptables", "-I", "FORWARD", "-s", "198.18.0.2/32", "-m", "comment", "--comment", "operator", "-j", "ACCEPT")
	wantLines(t, "iptables -S FORWARD after the flush", ipt(t, tp.node, "iptables", "-S", "FORWARD"),
		"-P FORWARD DROP", operatorRule, srcRule, dstRule)

	// A foreign base chain that drops on the forward hook wins over any accept in
	// iptables' chain; ForwardBlockers names it.
	nft(t, tp.node, "add", "table", "inet", "firewalld")
	nft(t, tp.node, "add", "chain", "inet", "firewalld", "filter_FORWARD",
		"{ type filter hook forward priority filter + 10; policy drop; }")
	if ping(t, tp.pod, "10.244.2.2") {
		t.Fatal("pod pings pod2 through a foreign forward chain with policy drop")
	}
	bs, err := ForwardBlockers(nsh, network)
	if err != nil || len(bs) != 1 || bs[0].String() != "table inet firewalld chain filter_FORWARD (hook forward, priority 10): policy drop" {
		t.Fatalf("ForwardBlockers = %v, %v; want the inet firewalld chain", bs, err)
	}
	nft(t, tp.node, "delete", "table", "inet", "firewalld")

	if err := DeleteForward(nsh); err != nil {
		t.Fatalf("DeleteForward: %v", err)
	}
	wantLines(t, "iptables -S FORWARD after DeleteForward", ipt(t, tp.node, "iptables", "-S", "FORWARD"),
		"-P FORWARD DROP", operatorRule)
	if ping(t, tp.pod, "10.244.2.2") {
		t.Error("pod still pings pod2 after DeleteForward")
	}
	if err := DeleteForward(nsh); err != nil {
		t.Fatalf("DeleteForward without rules: %v", err)
	}
}

// TestForwardFamilies: an IPv6 Network goes to ip6 filter FORWARD (as ip6tables-nft
// encodes it), a non-byte-aligned prefix reads back as itself, and moving the Network
// to the other family removes the old family's accepts.
func TestForwardFamilies(t *testing.T) {
	nettest.Privileged(t)
	n := nettest.NewNS(t, "masq-fwd")
	iptablesNFT(t, n)
	nsh := openHost(t, n)
	log := testlog.New(t, slog.LevelDebug)

	// No iptables chain: nothing to do, nothing created.
	if err := EnsureForward(nsh, []netip.Prefix{podRules.Network}, log); err != nil {
		t.Fatalf("EnsureForward without a FORWARD chain: %v", err)
	}
	if tables := nft(t, n, "list", "tables"); strings.TrimSpace(tables) != "" {
		t.Fatalf("EnsureForward created tables: %q", tables)
	}
	ipt(t, n, "iptables", "-P", "FORWARD", "DROP")
	ipt(t, n, "ip6tables", "-P", "FORWARD", "DROP")

	v6 := netip.MustParsePrefix("fd00:10::/50")
	if err := EnsureForward(nsh, []netip.Prefix{v6}, log); err != nil {
		t.Fatalf("EnsureForward IPv6: %v", err)
	}
	wantLines(t, "ip6tables -S FORWARD", ipt(t, n, "ip6tables", "-S", "FORWARD"), "-P FORWARD DROP",
		`-A FORWARD -s fd00:10::/50 -m comment --comment "weft: forward from pod network" -j ACCEPT`,
		`-A FORWARD -d fd00:10::/50 -m comment --comment "weft: forward to pod network" -j ACCEPT`)
	wantLines(t, "iptables -S FORWARD", ipt(t, n, "iptables", "-S", "FORWARD"), "-P FORWARD DROP")

	v4 := netip.MustParsePrefix("10.96.0.0/12")
	if err := EnsureForward(nsh, []netip.Prefix{v4}, log); err != nil {
		t.Fatalf("EnsureForward IPv4: %v", err)
	}
	wantLines(t, "iptables -S FORWARD", ipt(t, n, "iptables", "-S", "FORWARD"), "-P FORWARD DROP",
		`-A FORWARD -s 10.96.0.0/12 -m comment --comment "weft: forward from pod network" -j ACCEPT`,
		`-A FORWARD -d 10.96.0.0/12 -m comment --comment "weft: forward to pod network" -j ACCEPT`)
	wantLines(t, "ip6tables -S FORWARD", ipt(t, n, "ip6tables", "-S", "FORWARD"), "-P FORWARD DROP")

	for _, bad := range [][]netip.Prefix{nil, {netip.Prefix{}}, {v4, netip.Prefix{}}} {
		if err := EnsureForward(nsh, bad, log); !errors.Is(err, ErrInvalid) {
			t.Fatalf("EnsureForward(%v) = %v, want ErrInvalid", bad, err)
		}
	}
}

// TestForwardBlockers: which forward-hook chains ForwardBlockers names.
func TestForwardBlockers(t *testing.T) {
	nettest.Privileged(t)
	n := nettest.NewNS(t, "masq-blk")
	nsh := openHost(t, n)
	fd := nsh.Fd()
	network := podRules.Network
	blockers := func() []string {
		t.Helper()
		bs, err := ForwardBlockers(nsh, network)
		if err != nil {
			t.Fatalf("ForwardBlockers: %v", err)
		}
		var out []string
		for _, b := range bs {
			out = append(out, b.String())
		}
		return out
	}
	want := func(what string, w ...string) {
		t.Helper()
		if got := blockers(); !slices.Equal(got, w) {
			t.Fatalf("%s: blockers %q, want %q", what, got, w)
		}
	}
	want("empty ruleset")

	const fw = "table inet firewalld chain filter_FORWARD (hook forward, priority 10): "
	nft(t, n, "add", "table", "inet", "firewalld")
	nft(t, n, "add", "chain", "inet", "firewalld", "filter_FORWARD", "{ type filter hook forward priority filter + 10; policy drop; }")
	want("inet policy drop", fw+"policy drop")
	// Chains that cannot see the Network's packets, or are not on the forward hook, are no blockers.
	nft(t, n, "add", "table", "ip6", "other")
	nft(t, n, "add", "chain", "ip6", "other", "fwd6", "{ type filter hook forward priority 0; policy drop; }")
	nft(t, n, "add", "chain", "ip6", "other", "in6", "{ type filter hook input priority 0; policy drop; }")
	nft(t, n, "add", "table", "ip", "other")
	nft(t, n, "add", "chain", "ip", "other", "in4", "{ type filter hook input priority 0; policy drop; }")
	want("plus ip6 and input chains", fw+"policy drop")

	// The owner accepting the Network both ways (in nft's own encoding) makes it passable.
	nft(t, n, "add", "rule", "inet", "firewalld", "filter_FORWARD", "ip", "saddr", "10.240.0.0/12", "counter", "accept")
	want("saddr accept only", fw+"policy drop")
	nft(t, n, "add", "rule", "inet", "firewalld", "filter_FORWARD", "ip", "daddr", "10.244.0.0/16", "accept")
	want("saddr and daddr accepts")
	nft(t, n, "flush", "chain", "inet", "firewalld", "filter_FORWARD")
	nft(t, n, "add", "rule", "inet", "firewalld", "filter_FORWARD", "ip", "saddr", "10.244.1.0/24", "accept")
	nft(t, n, "add", "rule", "inet", "firewalld", "filter_FORWARD", "ip", "daddr", "10.244.1.0/24", "accept")
	want("accepts of a narrower prefix", fw+"policy drop")

	// Policy accept: no blocker, unless a rule drops everything (firewalld's own style).
	nft(t, n, "flush", "chain", "inet", "firewalld", "filter_FORWARD")
	nft(t, n, "chain", "inet", "firewalld", "filter_FORWARD", "{ policy accept; }")
	want("inet policy accept")
	nft(t, n, "add", "rule", "inet", "firewalld", "filter_FORWARD", "ip", "saddr", "10.244.0.0/16", "accept")
	nft(t, n, "add", "rule", "inet", "firewalld", "filter_FORWARD", "reject", "with", "icmpx", "admin-prohibited")
	h := ruleHandle(t, fd, nftables.TableFamilyINet, "firewalld", "filter_FORWARD", 1)
	want("final reject", fw+"rule handle "+h+" rejects every packet")
	nft(t, n, "insert", "rule", "inet", "firewalld", "filter_FORWARD", "ip", "daddr", "10.244.0.0/16", "accept")
	want("accepts before the final reject")
	nft(t, n, "delete", "table", "inet", "firewalld")
	want("foreign table gone")

	// iptables' FORWARD chain: a blocker until EnsureForward, and a REJECT rule before
	// weft's appended accepts is one too.
	iptablesNFT(t, n)
	ipt(t, n, "iptables", "-P", "FORWARD", "DROP")
	want("iptables policy DROP", "table ip filter chain FORWARD (hook forward, priority 0): policy drop")
	if err := EnsureForward(nsh, []netip.Prefix{network}, testlog.New(t, slog.LevelDebug)); err != nil {
		t.Fatalf("EnsureForward: %v", err)
	}
	want("iptables policy DROP with weft's accepts")
	ipt(t, n, "iptables", "-I", "FORWARD", "-j", "REJECT")
	h = ruleHandle(t, fd, nftables.TableFamilyIPv4, ForwardTable, ForwardChain, 0)
	want("iptables REJECT first", "table ip filter chain FORWARD (hook forward, priority 0): rule handle "+h+" rejects every packet")
}

// ruleHandle returns the handle of the i-th rule of a chain, as a string.
func ruleHandle(t *testing.T, fd int, fam nftables.TableFamily, table, chain string, i int) string {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Name: table, Family: fam}
	rules, err := c.GetRules(tbl, &nftables.Chain{Name: chain, Table: tbl})
	if err != nil || len(rules) <= i {
		t.Fatalf("rules of %s %s: %v, %v", table, chain, rules, err)
	}
	return strconv.FormatUint(rules[i].Handle, 10)
}

// TestForwardBlockersLegacy: a legacy iptables FORWARD chain is invisible to
// nftables; its policy is read through getsockopt.
func TestForwardBlockersLegacy(t *testing.T) {
	nettest.Privileged(t)
	for _, tc := range []struct {
		tool, network, other string
	}{
		{"iptables-legacy", "10.244.0.0/16", "10.245.0.0/16"},
		{"ip6tables-legacy", "fd00:10::/48", "fd00:20::/48"},
	} {
		t.Run(tc.tool, func(t *testing.T) {
			n := nettest.NewNS(t, "masq-leg")
			if out, err := n.Exec(t, tc.tool, "-V"); err != nil || !strings.Contains(out, "legacy") {
				t.Skipf("no %s: %v %s", tc.tool, err, out)
			}
			nsh := openHost(t, n)
			network := netip.MustParsePrefix(tc.network)
			blocked := func(what string, want bool) {
				t.Helper()
				bs, err := ForwardBlockers(nsh, network)
				if err != nil {
					t.Fatalf("%s: ForwardBlockers: %v", what, err)
				}
				if want && (len(bs) != 1 || bs[0].String() != tc.tool+" table filter chain FORWARD: policy DROP") || !want && len(bs) != 0 {
					t.Fatalf("%s: blockers %v, want blocked=%v", what, bs, want)
				}
			}
			blocked("no legacy table", false)
			ipt(t, n, tc.tool, "-A", "FORWARD", "-s", tc.network, "-j", "ACCEPT")
			blocked("policy ACCEPT", false)
			ipt(t, n, tc.tool, "-P", "FORWARD", "DROP")
			blocked("policy DROP", true)
			// Open("") is the calling thread's namespace, as the agent opens the host's.
			err := n.Do(func(ns.NetNS) error {
				self, err := host.Open("")
				if err != nil {
					return err
				}
				defer self.Close()
				bs, err := ForwardBlockers(self, network)
				if err == nil && len(bs) != 1 {
					err = fmt.Errorf("blockers %v, want the legacy FORWARD chain", bs)
				}
				return err
			})
			if err != nil {
				t.Fatalf("ForwardBlockers(Open(\"\")) inside %s: %v", n.Name, err)
			}
			// Accepts that do not cover the Network both ways do not count.
			ipt(t, n, tc.tool, "-A", "FORWARD", "-i", "lo", "-d", tc.network, "-j", "ACCEPT")
			ipt(t, n, tc.tool, "-A", "FORWARD", "-d", tc.other, "-m", "comment", "--comment", "x", "-j", "ACCEPT")
			ipt(t, n, tc.tool, "-A", "FORWARD", "-d", tc.network, "-p", "tcp", "-j", "ACCEPT")
			blocked("policy DROP, partial accepts", true)
			ipt(t, n, tc.tool, "-A", "FORWARD", "-d", tc.network, "-m", "comment", "--comment", "pods", "-j", "ACCEPT")
			blocked("policy DROP, -s and -d accepts", false)
			if tables := nft(t, n, "list", "tables"); strings.TrimSpace(tables) != "" {
				t.Fatalf("reading the legacy table created nftables tables: %q", tables)
			}
		})
	}
}

// TestPlaceKey: the repair memory tells namespaces apart by cookie, not by the inode
// number a freed namespace hands to the next one.
func TestPlaceKey(t *testing.T) {
	nettest.Privileged(t)
	n1 := nettest.NewNS(t, "masq-key")
	n2 := nettest.NewNS(t, "masq-key")
	k1, ok1 := placeKeyOf(openHost(t, n1), "masq")
	again, _ := placeKeyOf(openHost(t, n1), "masq")
	k2, ok2 := placeKeyOf(openHost(t, n2), "masq")
	if !ok1 || !ok2 || k1 != again || k1 == k2 {
		t.Fatalf("keys %+v (again %+v) and %+v, %v %v; want two stable, different keys", k1, again, k2, ok1, ok2)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(n1.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if k1.netns == st.Ino {
		t.Fatalf("key %+v is the namespace's inode number, not its cookie", k1)
	}
}

// TestForwardTraffic6: under FORWARD policy DROP in both ip and ip6 filter, the
// accepts for both networks (dual stack) let IPv4 and IPv6 pod traffic through; a
// network no longer given loses its accepts and its traffic is dropped again.
func TestForwardTraffic6(t *testing.T) {
	nettest.Privileged(t)
	tp := newTopo6(t)
	iptablesNFT(t, tp.node)
	nsh := openHost(t, tp.node)
	log, logs := captureLog(t)
	v4, v6 := podRules.Network, podRules6.IPv6Network
	pod2 := listenUDP(t, tp.pod2, "[fd00:10:0:2::2]:9000")

	if !ping(t, tp.pod, "fd00:10:0:2::2") || !ping(t, tp.pod, "10.244.2.2") {
		t.Fatal("pod cannot ping pod2 before any firewall: the test topology is broken")
	}
	ipt(t, tp.node, "iptables", "-P", "FORWARD", "DROP")
	ipt(t, tp.node, "ip6tables", "-P", "FORWARD", "DROP")
	if ping(t, tp.pod, "fd00:10:0:2::2") || ping(t, tp.pod, "10.244.2.2") {
		t.Fatal("pod pings pod2 through FORWARD policy DROP: the drop is not in effect")
	}
	if bs, err := ForwardBlockers(nsh, v6); err != nil || len(bs) != 1 || bs[0].String() != "table ip6 filter chain FORWARD (hook forward, priority 0): policy drop" {
		t.Fatalf("ForwardBlockers(%v) = %v, %v; want the ip6 filter FORWARD policy", v6, bs, err)
	}

	if err := EnsureForward(nsh, []netip.Prefix{v4, v6}, log); err != nil {
		t.Fatalf("EnsureForward: %v", err)
	}
	if !ping(t, tp.pod, "fd00:10:0:2::2") || !ping(t, tp.pod, "10.244.2.2") {
		t.Fatal("pod cannot ping pod2 over both families after EnsureForward")
	}
	wantSource(t, "pod → pod2 through FORWARD DROP", sourceSeen(t, tp.pod, "", "[fd00:10:0:2::2]:9000", 0, pod2), "fd00:10:0:1::2")
	if l := logs.take(); strings.Count(l, `msg="forward accept rules installed"`) != 2 {
		t.Errorf("first EnsureForward logged %q, want an Info install per family", l)
	}
	wantLines(t, "ip6tables -S FORWARD", ipt(t, tp.node, "ip6tables", "-S", "FORWARD"), "-P FORWARD DROP",
		`-A FORWARD -s fd00:10::/48 -m comment --comment "weft: forward from pod network" -j ACCEPT`,
		`-A FORWARD -d fd00:10::/48 -m comment --comment "weft: forward to pod network" -j ACCEPT`)
	wantLines(t, "iptables -S FORWARD", ipt(t, tp.node, "iptables", "-S", "FORWARD"), "-P FORWARD DROP", srcRule, dstRule)
	if bs, err := ForwardBlockers(nsh, v6); err != nil || len(bs) != 0 {
		t.Fatalf("ForwardBlockers(%v) after EnsureForward = %v, %v; want none", v6, bs, err)
	}
	// Idempotent in any order, duplicates dropped.
	if err := EnsureForward(nsh, []netip.Prefix{v6, v4, v6}, log); err != nil {
		t.Fatalf("second EnsureForward: %v", err)
	}
	if l := logs.take(); l != "" {
		t.Errorf("EnsureForward with the rules in place logged %q", l)
	}

	// Dual stack → IPv4-only: the IPv6 accepts go, IPv6 pod traffic is dropped again.
	if err := EnsureForward(nsh, []netip.Prefix{v4}, log); err != nil {
		t.Fatalf("EnsureForward IPv4-only: %v", err)
	}
	wantLines(t, "ip6tables -S FORWARD after IPv4-only", ipt(t, tp.node, "ip6tables", "-S", "FORWARD"), "-P FORWARD DROP")
	wantLines(t, "iptables -S FORWARD after IPv4-only", ipt(t, tp.node, "iptables", "-S", "FORWARD"), "-P FORWARD DROP", srcRule, dstRule)
	if ping(t, tp.pod, "fd00:10:0:2::2") {
		t.Error("pod still pings pod2 over IPv6 after its network's accepts were removed")
	}
	if !ping(t, tp.pod, "10.244.2.2") {
		t.Error("pod cannot ping pod2 over IPv4 after the IPv6 accepts were removed")
	}
	if l := logs.take(); !strings.Contains(l, `msg="forward accept rules of a network family no longer given removed" chain="ip6 filter FORWARD"`) {
		t.Errorf("EnsureForward IPv4-only logged %q, want the ip6 accepts' removal", l)
	}
}
