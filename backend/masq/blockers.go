package masq

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Blocker is a firewall chain on the forward hook that drops forwarded pod traffic
// and that EnsureForward cannot make passable: a base chain in a table that is not
// iptables-nft's FORWARD chain (firewalld, an operator's nftables.conf), or a legacy
// iptables FORWARD chain. In nftables every base chain on a hook sees the packet and
// a drop in any of them is final, so an accept in weft's own table cannot help.
// Blocker is comparable: compare slices of them to log only on change.
type Blocker struct {
	Family   string // nftables family: "ip", "ip6" or "inet"; for Legacy, "ip" or "ip6"
	Table    string
	Chain    string
	Priority int32  // hook priority (nftables only)
	Handle   uint64 // the rule that drops every packet; 0 = the chain's policy drops
	Verdict  string // "drop" or "reject"
	Legacy   bool   // a legacy iptables (xtables) chain: invisible to nftables
}

// String names the chain and what drops, e.g.
//
//	table inet firewalld chain filter_FORWARD (hook forward, priority 10): policy drop
//	table ip filter chain FORWARD (hook forward, priority 0): rule handle 4 rejects every packet
//	iptables-legacy table filter chain FORWARD: policy DROP
func (b Blocker) String() string {
	if b.Legacy {
		tool := "iptables-legacy"
		if b.Family == "ip6" {
			tool = "ip6tables-legacy"
		}
		return fmt.Sprintf("%s table %s chain %s: policy DROP", tool, b.Table, b.Chain)
	}
	s := fmt.Sprintf("table %s %s chain %s (hook forward, priority %d): ", b.Family, b.Table, b.Chain, b.Priority)
	if b.Handle == 0 {
		return s + "policy " + b.Verdict
	}
	return fmt.Sprintf("%srule handle %d %ss every packet", s, b.Handle, b.Verdict)
}

// ForwardBlockers returns the chains that drop traffic forwarded from or to network,
// as far as weft can tell without following jumps, in h.
// A base chain on the forward hook (family ip or inet for an IPv4 network, ip6 or
// inet for IPv6) is a blocker when it drops every packet (policy drop, or a rule with
// no match whose verdict is drop or reject) before it accepts both "saddr <prefix>"
// and "daddr <prefix>" for a prefix that covers network. So iptables-nft's FORWARD
// chain with weft's accepts (EnsureForward) is not a blocker, nor is a chain with
// policy accept, nor a foreign chain whose owner added such accepts. A legacy
// iptables filter table (/proc/net/ip_tables_names) is read through its getsockopt
// interface and reported when its FORWARD policy is DROP and its FORWARD rules do not
// accept network both ways.
//
// It is a diagnosis, not a verdict: a rule weft cannot analyse (a jump to another
// chain, a set lookup, an interface match) may accept pod traffic first, and a rule
// that only drops part of it is not reported. The agent logs the result when it
// changes and reports it on /readyz.
func ForwardBlockers(h Host, network netip.Prefix) ([]Blocker, error) {
	network, err := forwardNetwork(network)
	if err != nil {
		return nil, err
	}
	c, err := conn(h)
	if err != nil {
		return nil, fmt.Errorf("find forward blockers: %w", err)
	}
	chains, err := c.ListChains()
	if err != nil {
		return nil, fmt.Errorf("find forward blockers: list chains: %w", err)
	}
	fam := familyOf(network)
	var out []Blocker
	for _, ch := range chains {
		if ch.Table.Family != fam && ch.Table.Family != nftables.TableFamilyINet {
			continue
		}
		if ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward {
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return nil, fmt.Errorf("find forward blockers: list rules of %s %s %s: %w",
				nftFamily(ch.Table.Family), ch.Table.Name, ch.Name, err)
		}
		if b, ok := chainBlocks(ch, rules, network); ok {
			out = append(out, b)
		}
	}
	b, ok, err := legacyBlocker(h, network)
	if err != nil {
		return nil, fmt.Errorf("find forward blockers: %w", err)
	}
	if ok {
		out = append(out, b)
	}
	return out, nil
}

// nftFamily is the nft keyword of any table family.
func nftFamily(f nftables.TableFamily) string {
	if f == nftables.TableFamilyINet {
		return "inet"
	}
	return familyName(f)
}

// chainBlocks walks a forward base chain's rules in order (see ForwardBlockers).
func chainBlocks(ch *nftables.Chain, rules []*nftables.Rule, network netip.Prefix) (Blocker, bool) {
	is6 := network.Addr().Is6()
	b := Blocker{Family: nftFamily(ch.Table.Family), Table: ch.Table.Name, Chain: ch.Name}
	if ch.Priority != nil {
		b.Priority = int32(*ch.Priority)
	}
	var from, to bool
	for _, r := range rules {
		if from && to {
			return Blocker{}, false
		}
		if m, ok := acceptsPrefix(r.Exprs, is6); ok {
			if m.Prefix.Bits() <= network.Bits() && m.Prefix.Contains(network.Addr()) {
				from, to = from || !m.Dst, to || m.Dst
			}
			continue
		}
		if v, ok := dropsAll(r.Exprs, is6); ok {
			b.Handle, b.Verdict = r.Handle, v
			return b, true
		}
	}
	if from && to || ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop {
		return Blocker{}, false
	}
	b.Verdict = "drop"
	return b, true
}

// prefixMatch is a decoded "saddr|daddr <prefix>" match.
type prefixMatch struct {
	Dst    bool
	Prefix netip.Prefix
}

// matchPrefix decodes an address prefix match at the start of ex, in either form nft
// and iptables-nft write (see iptAddr): a load of only the prefix's bytes and a
// compare, or a load of the whole address, an optional contiguous mask and a compare.
// n is the number of expressions it took.
func matchPrefix(ex []expr.Any, is6 bool) (m prefixMatch, n int, ok bool) {
	so, do, size := addrOffsets(is6)
	if len(ex) < 2 {
		return m, 0, false
	}
	p, isLoad := ex[0].(*expr.Payload)
	if !isLoad || p.OperationType != expr.PayloadLoad || p.Base != expr.PayloadBaseNetworkHeader ||
		p.DestRegister != 1 || (p.Offset != so && p.Offset != do) || p.Len == 0 || p.Len > size {
		return m, 0, false
	}
	m.Dst = p.Offset == do
	n, bits := 1, int(p.Len)*8
	if b, isMask := ex[1].(*expr.Bitwise); isMask && p.Len == size {
		ones, err := maskBits(b, size)
		if err != nil || b.SourceRegister != 1 || b.DestRegister != 1 {
			return m, 0, false
		}
		n, bits = 2, ones
	}
	if len(ex) <= n {
		return m, 0, false
	}
	c, isCmp := ex[n].(*expr.Cmp)
	if !isCmp || c.Op != expr.CmpOpEq || c.Register != 1 || len(c.Data) != int(p.Len) {
		return m, 0, false
	}
	full := make([]byte, size)
	copy(full, c.Data)
	a, _ := netip.AddrFromSlice(full)
	m.Prefix = netip.PrefixFrom(a, bits)
	if m.Prefix.Masked() != m.Prefix {
		return m, 0, false
	}
	return m, n + 1, true
}

// skipNfproto skips an inet table's "meta nfproto ipv4|ipv6" check for network's
// family; ok is false when the rule is for the other family.
func skipNfproto(ex []expr.Any, is6 bool) (n int, ok bool) {
	if len(ex) < 2 {
		return 0, true
	}
	meta, isMeta := ex[0].(*expr.Meta)
	c, isCmp := ex[1].(*expr.Cmp)
	if !isMeta || meta.Key != expr.MetaKeyNFPROTO || !isCmp || c.Op != expr.CmpOpEq || len(c.Data) != 1 {
		return 0, true
	}
	want := byte(unix.NFPROTO_IPV4)
	if is6 {
		want = unix.NFPROTO_IPV6
	}
	return 2, c.Data[0] == want
}

// acceptsPrefix recognises "[meta nfproto F] saddr|daddr <prefix> [comment] [counter]
// accept", the shape of weft's accepts and of an operator's `nft add rule ... ip
// saddr 10.244.0.0/16 accept`.
func acceptsPrefix(ex []expr.Any, is6 bool) (prefixMatch, bool) {
	i, ok := skipNfproto(ex, is6)
	if !ok {
		return prefixMatch{}, false
	}
	m, n, ok := matchPrefix(ex[i:], is6)
	if !ok {
		return m, false
	}
	for i += n; i < len(ex)-1; i++ {
		switch e := ex[i].(type) {
		case *expr.Counter:
		case *expr.Match:
			if e.Name != "comment" {
				return m, false
			}
		default:
			return m, false
		}
	}
	if i != len(ex)-1 {
		return m, false
	}
	v, ok := ex[i].(*expr.Verdict)
	return m, ok && v.Kind == expr.VerdictAccept
}

// dropsAll recognises a rule with no match that drops or rejects every packet of
// network's family: "[meta nfproto F] [counter] [log] drop|reject" (iptables-nft's
// "-j REJECT" is an xtables target).
func dropsAll(ex []expr.Any, is6 bool) (verdict string, ok bool) {
	i, ok := skipNfproto(ex, is6)
	if !ok || len(ex) == i {
		return "", false
	}
	for ; i < len(ex)-1; i++ {
		switch ex[i].(type) {
		case *expr.Counter, *expr.Log:
		default:
			return "", false
		}
	}
	switch e := ex[i].(type) {
	case *expr.Verdict:
		if e.Kind == expr.VerdictDrop {
			return "drop", true
		}
	case *expr.Reject:
		return "reject", true
	case *expr.Target:
		if e.Name == "REJECT" {
			return "reject", true
		}
	}
	return "", false
}
