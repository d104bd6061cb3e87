package masq

import (
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
)

// ForwardTable and ForwardChain name the iptables-nft table and base chain (family ip,
// or ip6 for an IPv6 Network) that EnsureForward adds its accept rules to.
const (
	ForwardTable = "filter"
	ForwardChain = "FORWARD"
)

// forwardMarker starts the comment of every rule EnsureForward writes: a rule in the
// FORWARD chain whose comment starts with it is weft's, and only such rules are ever
// changed or removed.
const forwardMarker = "weft: forward"

// forwardComments are the comments of the two accept rules: [0] source in the Network,
// [1] destination in the Network.
var forwardComments = [2]string{forwardMarker + " from pod network", forwardMarker + " to pod network"}

// forwardNetwork validates and masks the Network for the forward rules.
func forwardNetwork(network netip.Prefix) (netip.Prefix, error) {
	switch {
	case !network.IsValid():
		return network, fmt.Errorf("%w: forward rules need a network", ErrInvalid)
	case network.Addr().Is4In6():
		return network, fmt.Errorf("%w: IPv4-mapped network %v", ErrInvalid, network)
	case network.Bits() == 0:
		return network, fmt.Errorf("%w: network %v matches every address", ErrInvalid, network)
	}
	return network.Masked(), nil
}

// forwardNetworks validates and masks every network for the forward rules and
// drops duplicates; at least one is needed.
func forwardNetworks(networks []netip.Prefix) ([]netip.Prefix, error) {
	if len(networks) == 0 {
		return nil, fmt.Errorf("%w: forward rules need a network", ErrInvalid)
	}
	out := make([]netip.Prefix, 0, len(networks))
	for _, n := range networks {
		n, err := forwardNetwork(n)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// familyOf returns the nftables family of a prefix's addresses.
func familyOf(p netip.Prefix) nftables.TableFamily {
	if p.Addr().Is6() {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}

// forwardExprs returns rule i (0: -s network, 1: -d network) exactly as iptables-nft
// 1.8 encodes `-A FORWARD -s|-d <network> -m comment --comment <c> -j ACCEPT`: the
// address match (see iptAddr), the xtables comment match, a counter and accept.
func forwardExprs(network netip.Prefix, i int) []expr.Any {
	c := xt.Comment(forwardComments[i])
	out := iptAddr(network, i == 1)
	return append(out,
		&expr.Match{Name: "comment", Rev: 0, Info: &c},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictAccept})
}

// iptAddr encodes a source (dst false) or destination address match the way
// iptables-nft does: a byte-aligned prefix loads only its prefix bytes and compares
// them; any other prefix loads the whole address, masks it and compares.
func iptAddr(p netip.Prefix, dst bool) []expr.Any {
	so, do, size := addrOffsets(p.Addr().Is6())
	off := so
	if dst {
		off = do
	}
	addr := p.Addr().AsSlice()
	if p.Bits()%8 == 0 {
		n := uint32(p.Bits() / 8)
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:n]},
		}
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: netipMask(p.Bits(), int(size)), Xor: make([]byte, size)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr},
	}
}

// iptText is the iptables form of forward rule i, for logs.
func iptText(network netip.Prefix, i int) string {
	flag := "-s"
	if i == 1 {
		flag = "-d"
	}
	return fmt.Sprintf("-A %s %s %v -m comment --comment %q -j ACCEPT", ForwardChain, flag, network, forwardComments[i])
}

// ruleComment returns a rule's comment: the text of an xtables comment match (what
// iptables-nft writes) or else the nftables userdata comment (what nft writes).
func ruleComment(r *nftables.Rule) string {
	for _, e := range r.Exprs {
		if m, ok := e.(*expr.Match); ok && m.Name == "comment" {
			if c, ok := m.Info.(*xt.Comment); ok {
				return string(*c)
			}
		}
	}
	c, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return c
}

// isOurs reports whether a rule in the FORWARD chain is one of weft's.
func isOurs(r *nftables.Rule) bool { return strings.HasPrefix(ruleComment(r), forwardMarker) }

// sameExprs compares a rule read from the kernel with the expressions wanted,
// ignoring counter values.
func sameExprs(got, want []expr.Any) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		switch w := want[i].(type) {
		case *expr.Counter:
			if _, ok := got[i].(*expr.Counter); !ok {
				return false
			}
		case *expr.Match:
			g, ok := got[i].(*expr.Match)
			if !ok || g.Name != w.Name || g.Rev != w.Rev || !reflect.DeepEqual(g.Info, w.Info) {
				return false
			}
		default:
			if !reflect.DeepEqual(got[i], want[i]) {
				return false
			}
		}
	}
	return true
}

// fwdRule is one accept rule: rule i (0: -s, 1: -d; see forwardComments) for network.
type fwdRule struct {
	network netip.Prefix
	i       int
}

// fwdPlan is what one chain needs: rules of weft's to delete (with why) and rules to
// append.
type fwdPlan struct {
	del []*nftables.Rule
	why []string
	add []fwdRule
}

func (p fwdPlan) empty() bool { return len(p.del) == 0 && len(p.add) == 0 }

// planForward compares the rules of a FORWARD chain with the two accepts wanted for
// each of networks (none wants none) and returns the changes. Rules that are not
// weft's are never touched; weft's that are exactly right stay where they are.
func planForward(rules []*nftables.Rule, networks []netip.Prefix) fwdPlan {
	var p fwdPlan
	var wanted []fwdRule
	for _, n := range networks {
		wanted = append(wanted, fwdRule{n, 0}, fwdRule{n, 1})
	}
	found := make([]bool, len(wanted))
	for _, r := range rules {
		if !isOurs(r) {
			continue
		}
		matched := false
		for j, w := range wanted {
			if !found[j] && sameExprs(r.Exprs, forwardExprs(w.network, w.i)) {
				found[j], matched = true, true
				break
			}
		}
		if matched {
			continue
		}
		p.del = append(p.del, r)
		p.why = append(p.why, whyNotWanted(r, networks))
	}
	for j, ok := range found {
		if !ok {
			p.add = append(p.add, wanted[j])
		}
	}
	return p
}

// whyNotWanted says, for the log, why a rule of weft's is removed: called for rules
// that matched no wanted rule that was still unmatched.
func whyNotWanted(r *nftables.Rule, networks []netip.Prefix) string {
	h := fmt.Sprintf("handle %d %q", r.Handle, ruleComment(r))
	if len(networks) == 0 {
		return h + ": not wanted in this family"
	}
	for _, n := range networks {
		for i := range forwardComments {
			if sameExprs(r.Exprs, forwardExprs(n, i)) {
				return h + ": duplicate"
			}
		}
	}
	if m, n, ok := matchPrefix(r.Exprs, networks[0].Addr().Is6()); ok && n > 0 && !slices.Contains(networks, m.Prefix) {
		return fmt.Sprintf("%s: for network %v", h, m.Prefix)
	}
	return h + ": changed"
}

// forwardChain returns the iptables-nft FORWARD base chain of family fam, or nil when
// there is none (no iptables-nft filter table, or a FORWARD chain that is not hooked
// at forward).
func forwardChain(c *nftables.Conn, fam nftables.TableFamily) (*nftables.Chain, error) {
	chains, err := c.ListChainsOfTableFamily(fam)
	if err != nil {
		return nil, fmt.Errorf("list %s chains: %w", familyName(fam), err)
	}
	for _, ch := range chains {
		if ch.Table.Name == ForwardTable && ch.Name == ForwardChain &&
			ch.Hooknum != nil && *ch.Hooknum == *nftables.ChainHookForward {
			return ch, nil
		}
	}
	return nil, nil
}

// fwdChange is one chain's plan, ready to be queued.
type fwdChange struct {
	ch       *nftables.Chain
	plan     fwdPlan
	networks []netip.Prefix // the chain's family's networks; none: the chain wants no weft rules
}

// planAll plans every family's FORWARD chain: each chain wants the two accepts for
// every network of its family and no others (a family no longer given loses its
// accepts). Empty networks want none anywhere.
func planAll(c *nftables.Conn, networks []netip.Prefix) ([]fwdChange, error) {
	var out []fwdChange
	for _, fam := range families {
		ch, err := forwardChain(c, fam)
		if err != nil || ch == nil {
			if err != nil {
				return nil, err
			}
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of %s %s %s: %w", familyName(fam), ForwardTable, ForwardChain, err)
		}
		var want []netip.Prefix
		for _, n := range networks {
			if familyOf(n) == fam {
				want = append(want, n)
			}
		}
		out = append(out, fwdChange{ch: ch, plan: planForward(rules, want), networks: want})
	}
	return out, nil
}

// apply queues the deletes and appends of every plan on c and flushes them as one
// batch. It returns whether anything was written.
func apply(c *nftables.Conn, changes []fwdChange) (bool, error) {
	wrote := false
	for _, ch := range changes {
		for _, r := range ch.plan.del {
			if err := c.DelRule(&nftables.Rule{Table: ch.ch.Table, Chain: ch.ch, Handle: r.Handle}); err != nil {
				return false, err
			}
			wrote = true
		}
		for _, a := range ch.plan.add {
			// Append: see doc.go for why not insert.
			c.AddRule(&nftables.Rule{Table: ch.ch.Table, Chain: ch.ch, Exprs: forwardExprs(a.network, a.i)})
			wrote = true
		}
	}
	if !wrote {
		return false, nil
	}
	if err := c.Flush(); err != nil {
		return false, err
	}
	return true, nil
}

// EnsureForward makes the iptables-nft FORWARD chains (table ip filter for the IPv4
// networks, ip6 filter for the IPv6 ones) accept forwarded packets from and to every
// network in networks, as flannel's --iptables-forward-rules does, so that a FORWARD
// policy of DROP (Docker sets one) does not drop pod traffic. It appends two rules
// per network, encoded as iptables-nft encodes
//
//	-A FORWARD -s <network> -m comment --comment "weft: forward from pod network" -j ACCEPT
//	-A FORWARD -d <network> -m comment --comment "weft: forward to pod network" -j ACCEPT
//
// It is idempotent and cheap (one listing) when the rules are in place; a missing,
// changed or duplicated rule of weft's, or one for a network no longer given (in
// either family), is repaired in one atomic batch. Rules that are not weft's are
// never touched. When a family has no such chain nothing is done there: nothing
// there can drop. Call it again every resync interval: a chain that appears later
// (Docker starts after weftd) or is flushed (iptables-restore) gets the rules then.
// It cannot help against a drop in another table or in a legacy iptables chain: see
// ForwardBlockers. networks must hold at least one network (DeleteForward removes
// all). A nil log discards.
func EnsureForward(h Host, networks []netip.Prefix, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	networks, err := forwardNetworks(networks)
	if err != nil {
		return err
	}
	c, err := conn(h)
	if err != nil {
		return fmt.Errorf("ensure forward rules: %w", err)
	}
	changes, err := planAll(c, networks)
	if err != nil {
		return fmt.Errorf("ensure forward rules: %w", err)
	}
	wrote, err := apply(c, changes)
	if err != nil {
		return fmt.Errorf("ensure forward rules: %w", err)
	}
	// What was in place before, per family, decides whether a change is a repair.
	wasInPlace := map[nftables.TableFamily]bool{}
	for _, ch := range changes {
		if key, ok := placeKeyOf(h, forwardKey(ch.ch.Table.Family)); ok {
			_, wasInPlace[ch.ch.Table.Family] = inPlace.Load(key)
		}
	}
	if wrote {
		// Read back: the batch was applied, but a concurrent writer could have raced us.
		after, err := planAll(c, networks)
		if err != nil {
			return fmt.Errorf("verify forward rules: %w", err)
		}
		for _, ch := range after {
			if !ch.plan.empty() {
				return fmt.Errorf("verify forward rules: %s %s %s still needs %d deletes and %d appends",
					familyName(ch.ch.Table.Family), ForwardTable, ForwardChain, len(ch.plan.del), len(ch.plan.add))
			}
		}
	}
	for _, ch := range changes {
		key, ok := placeKeyOf(h, forwardKey(ch.ch.Table.Family))
		switch {
		case !ok:
		case len(ch.networks) > 0:
			inPlace.Store(key, true)
		default:
			inPlace.Delete(key)
		}
	}
	switch {
	case len(changes) == 0:
		log.Debug("no iptables-nft FORWARD chain: no forward accept rules needed", "networks", networks)
		return nil
	case !wrote:
		log.Debug("forward accept rules already in place", "networks", networks)
		return nil
	}
	logForward(log, changes, wasInPlace)
	return nil
}

// forwardKey is the inPlace key of a family's forward rules.
func forwardKey(fam nftables.TableFamily) string { return "forward " + familyName(fam) }

// logForward logs what EnsureForward changed: at Warn when it repaired rules (weft's
// rules had been in place in that chain earlier in this process, or a rule of weft's
// was changed or duplicated), at Info for a first install or a Network change.
func logForward(log *slog.Logger, changes []fwdChange, wasInPlace map[nftables.TableFamily]bool) {
	for _, ch := range changes {
		if ch.plan.empty() {
			continue
		}
		repair := wasInPlace[ch.ch.Table.Family] && len(ch.plan.add) > 0
		for _, w := range ch.plan.why {
			if strings.HasSuffix(w, ": changed") || strings.HasSuffix(w, ": duplicate") {
				repair = true
			}
		}
		attrs := []any{"chain", familyName(ch.ch.Table.Family) + " " + ForwardTable + " " + ForwardChain}
		if len(ch.plan.add) > 0 {
			var added []string
			for _, a := range ch.plan.add {
				added = append(added, iptText(a.network, a.i))
			}
			attrs = append(attrs, "added", strings.Join(added, "; "))
		}
		if len(ch.plan.why) > 0 {
			attrs = append(attrs, "removed", strings.Join(ch.plan.why, "; "))
		}
		switch {
		case repair:
			log.Warn("forward accept rules repaired", attrs...)
		case len(ch.networks) > 0:
			log.Info("forward accept rules installed", attrs...)
		default:
			log.Info("forward accept rules of a network family no longer given removed", attrs...)
		}
	}
}

// DeleteForward removes weft's accept rules from the FORWARD chains of both families
// and nothing else; absent chains and rules are not an error. The agent calls it when
// --iptables-forward-rules is off, so a previous run's accepts do not linger.
func DeleteForward(h Host) error {
	c, err := conn(h)
	if err != nil {
		return fmt.Errorf("delete forward rules: %w", err)
	}
	changes, err := planAll(c, nil)
	if err != nil {
		return fmt.Errorf("delete forward rules: %w", err)
	}
	if _, err := apply(c, changes); err != nil {
		return fmt.Errorf("delete forward rules: %w", err)
	}
	for _, fam := range families {
		if key, ok := placeKeyOf(h, forwardKey(fam)); ok {
			inPlace.Delete(key)
		}
	}
	return nil
}
