package masq

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// RATableName is the nftables table, family ip6, that EnsureRADrop owns. It is not
// TableName: the masquerade code treats a table named "weft" in family ip6 as its own
// (an IPv6 Network's masquerade rules) and would report it as drift or delete it.
const RATableName = "weft-ra"

// RAChainName is the base chain in RATableName (type filter, hook input, priority
// filter, policy accept).
const RAChainName = "input"

// raKey is the inPlace key of the router advertisement drop.
const raKey = "ra-drop"

// ICMPv6 types EnsureRADrop drops on the device (RFC 4861).
const (
	icmpv6RouterAdvert = 134
	icmpv6Redirect     = 137
)

// raDrops are the chain's rules, in order: the ICMPv6 type each one drops and the
// comment `nft list` shows. See doc.go for why redirects are dropped too.
var raDrops = [...]struct {
	typ  byte
	what string
}{
	{icmpv6RouterAdvert, "router advertisements"},
	{icmpv6Redirect, "redirects"},
}

// invalidIfname is the error about a device name the kernel would refuse, so no
// device can have it. It matches ErrInvalid under errors.Is.
type invalidIfname struct{ name, why string }

func (e invalidIfname) Error() string {
	return fmt.Sprintf("router advertisement drop: invalid device name %q: %s", e.name, e.why)
}

func (e invalidIfname) Is(target error) bool { return target == ErrInvalid }

// checkIfname accepts what the kernel accepts as a device name (dev_valid_name).
func checkIfname(name string) error {
	switch {
	case name == "", name == ".", name == "..":
		return invalidIfname{name, "reserved"}
	case len(name) >= unix.IFNAMSIZ:
		return invalidIfname{name, fmt.Sprintf("longer than %d bytes", unix.IFNAMSIZ-1)}
	case strings.ContainsAny(name, "/:\x00 \t\n\v\f\r"):
		return invalidIfname{name, "a slash, colon, NUL or white space"}
	}
	return nil
}

// ifnameData is the register value of `meta iifname` for name: the name padded with
// NULs to IFNAMSIZ, as nft encodes an exact (not wildcard) name.
func ifnameData(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// raExprs is rule i of the chain for ifname, as nft encodes
// `iifname "<ifname>" icmpv6 type <type> counter drop` in an ip6 table. l4proto (not
// the IPv6 header's next header field) skips extension headers, so a hop-by-hop
// option in front of the ICMPv6 header does not get an RA past the rule.
func raExprs(ifname string, i int) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameData(ifname)},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{raDrops[i].typ}},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// raComment is rule i's comment.
func raComment(ifname string, i int) string {
	return fmt.Sprintf("weft: drop %s arriving on %s", raDrops[i].what, ifname)
}

// raState is what readRADrop found.
type raState struct {
	present bool     // the table exists
	ifnames []string // the devices the rules are for, in rule order; nil when drift is set
	drift   string   // why the table is not one EnsureRADrop writes ("" = it is)
}

// readRADrop reads weft's ip6 table back: the table listing (its flags and how many
// chains and sets it holds), the chain and its rules. Three netlink requests, none
// of them a dump of other tables' chains or rules, so the cost does not grow with
// the rest of the ruleset (kube-proxy's nftables mode has thousands of chains).
func readRADrop(c *nftables.Conn) (raState, error) {
	t, err := raTable(c)
	if err != nil {
		return raState{}, err
	}
	if t == nil {
		return raState{}, nil
	}
	flags, use := tableU32(t.Flags), tableU32(t.Use)
	switch {
	case flags != 0: // dormant (1) switches the table's chains off
		return raState{present: true, drift: fmt.Sprintf("table flags %#x, want none", flags)}, nil
	case use == 0:
		return raState{present: true, drift: fmt.Sprintf("chain %q missing", RAChainName)}, nil
	case use != 1: // chains, sets, objects and flowtables all count
		return raState{present: true, drift: fmt.Sprintf("table holds %d chains or sets, want 1 chain", use)}, nil
	}
	ch, err := c.ListChain(t, RAChainName)
	if err != nil {
		// The table's one object is not our chain (or it vanished meanwhile): the
		// rewrite and its read-back tell a real netlink error from drift.
		return raState{present: true, drift: fmt.Sprintf("chain %q missing (%v)", RAChainName, err)}, nil
	}
	if why := raChainDrift(ch); why != "" {
		return raState{present: true, drift: why}, nil
	}
	rules, err := c.GetRules(t, ch)
	if err != nil {
		return raState{}, fmt.Errorf("list rules of ip6 %s %s: %w", RATableName, RAChainName, err)
	}
	ifnames, why := raRulesIfnames(rules)
	return raState{present: true, ifnames: ifnames, drift: why}, nil
}

// raTable returns weft's ip6 weft-ra table, or nil.
func raTable(c *nftables.Conn) (*nftables.Table, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv6)
	if err != nil {
		return nil, fmt.Errorf("list ip6 tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == RATableName {
			return t, nil
		}
	}
	return nil, nil
}

// tableU32 corrects a Table.Flags or Table.Use as google/nftables v0.3.0 lists it:
// tableFromMsg decodes these big-endian netlink attributes in host byte order, so on
// a little-endian host a table holding one chain reads as Use 0x01000000.
// TestEnsureRADrop fails (every call a repair) if a newer version decodes them right.
func tableU32(v uint32) uint32 {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return binary.BigEndian.Uint32(b[:])
}

// raChainDrift says what is wrong with the chain's hook ("" = nothing).
func raChainDrift(ch *nftables.Chain) string {
	if ch.Type != nftables.ChainTypeFilter ||
		ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookInput ||
		ch.Priority == nil || *ch.Priority != *nftables.ChainPriorityFilter ||
		ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept {
		return fmt.Sprintf("chain %q is not type filter hook input priority filter policy accept", RAChainName)
	}
	return ""
}

// raRulesIfnames checks that rules are exactly the chain's rules for one or more
// devices (each device's len(raDrops) rules in a row) and returns those devices, or
// else why not.
func raRulesIfnames(rules []*nftables.Rule) ([]string, string) {
	if len(rules) == 0 || len(rules)%len(raDrops) != 0 {
		return nil, fmt.Sprintf("%d rules, want %d per device", len(rules), len(raDrops))
	}
	var ifnames []string
	for g := 0; g < len(rules); g += len(raDrops) {
		// The device comes from the group's first rule's iifname compare; every rule
		// of the group must then be exactly what raExprs writes for it.
		first := rules[g]
		var ifname string
		if len(first.Exprs) > 1 {
			if c, ok := first.Exprs[1].(*expr.Cmp); ok && len(c.Data) == unix.IFNAMSIZ {
				ifname = strings.TrimRight(string(c.Data), "\x00")
			}
		}
		if checkIfname(ifname) != nil {
			return nil, fmt.Sprintf("rule %d (handle %d) is not an iifname match", g+1, first.Handle)
		}
		if slices.Contains(ifnames, ifname) {
			return nil, fmt.Sprintf("rule %d (handle %d): device %q twice", g+1, first.Handle, ifname)
		}
		for i := range raDrops {
			if r := rules[g+i]; !sameExprs(r.Exprs, raExprs(ifname, i)) {
				return nil, fmt.Sprintf("rule %d (handle %d) is not `iifname %q icmpv6 type %d counter drop`",
					g+i+1, r.Handle, ifname, raDrops[i].typ)
			}
		}
		ifnames = append(ifnames, ifname)
	}
	return ifnames, ""
}

// writeRADrop builds the table for ifnames in one batch, deleting the old one first
// when present: packets see the old table or the new one, never an empty chain.
func writeRADrop(c *nftables.Conn, ifnames []string, present bool) error {
	if present {
		old := &nftables.Table{Name: RATableName, Family: nftables.TableFamilyIPv6}
		c.AddTable(old) // create-if-absent: the delete cannot fail with ENOENT if it vanished meanwhile
		c.DelTable(old)
	}
	t := c.AddTable(&nftables.Table{Name: RATableName, Family: nftables.TableFamilyIPv6})
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{
		Name:     RAChainName,
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookInput,
		Priority: nftables.ChainPriorityFilter,
		Policy:   &accept,
	})
	for _, ifname := range ifnames {
		for i := range raDrops {
			c.AddRule(&nftables.Rule{
				Table:    t,
				Chain:    ch,
				Exprs:    raExprs(ifname, i),
				UserData: userdata.AppendString(nil, userdata.TypeComment, raComment(ifname, i)),
			})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("write nftables table ip6 %s: %w", RATableName, err)
	}
	return nil
}

// EnsureRADrop keeps an nftables table of weft's own, `table ip6 weft-ra`, whose base
// chain on the input hook drops ICMPv6 router advertisements (type 134) and redirects
// (type 137) arriving on each of the devices ifnames (flannel.1 and flannel-v6.1 in
// a dual-stack overlay):
//
//	table ip6 weft-ra {
//		chain input {
//			type filter hook input priority filter; policy accept;
//			iifname "flannel.1" icmpv6 type nd-router-advert counter drop
//			iifname "flannel.1" icmpv6 type nd-redirect counter drop
//			iifname "flannel-v6.1" icmpv6 type nd-router-advert counter drop
//			iifname "flannel-v6.1" icmpv6 type nd-redirect counter drop
//		}
//	}
//
// It stands in for accept_ra=0 (and accept_redirects=0) on the devices where
// /proc/sys is read-only: the kernel's neighbour discovery acts on these messages
// in icmpv6_rcv, after the input hook. The match is by name, so it can be installed
// before the devices exist and survives a device being recreated. The devices are
// kept sorted, duplicates dropped: the order given does not matter.
//
// Like Ensure, it is idempotent and cheap: when the table is in place it writes
// nothing and logs nothing above Debug, so the agent calls it every resync interval.
// A deleted or flushed table or chain, a changed, added or deleted rule, a changed
// hook or policy, or a dormant table is replaced in one atomic batch and logged at
// Warn with what was wrong; a table for other devices is replaced and logged at
// Info. ifnames must name at least one device (DeleteRADrop removes the table). A
// nil log discards.
func EnsureRADrop(h Host, ifnames []string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(ifnames) == 0 {
		return fmt.Errorf("%w: router advertisement drop: no device", ErrInvalid)
	}
	for _, ifname := range ifnames {
		if err := checkIfname(ifname); err != nil {
			return err
		}
	}
	ifnames = slices.Compact(slices.Sorted(slices.Values(ifnames)))
	devices := strings.Join(ifnames, ",")
	c, err := conn(h)
	if err != nil {
		return fmt.Errorf("ensure router advertisement drop: %w", err)
	}
	key, keyed := placeKeyOf(h, raKey)
	_, wasInPlace := inPlace.Load(key)
	before, err := readRADrop(c)
	if err != nil {
		return fmt.Errorf("ensure router advertisement drop: %w", err)
	}
	if before.present && before.drift == "" && slices.Equal(before.ifnames, ifnames) {
		if keyed {
			inPlace.Store(key, true)
		}
		log.Debug("router advertisement drop already in place", "device", devices)
		return nil
	}
	if err := writeRADrop(c, ifnames, before.present); err != nil {
		return fmt.Errorf("ensure router advertisement drop: %w", err)
	}
	// Read back: a concurrent writer or an old kernel could have left something else.
	after, err := readRADrop(c)
	if err != nil {
		return fmt.Errorf("verify router advertisement drop: %w", err)
	}
	if !after.present || after.drift != "" || !slices.Equal(after.ifnames, ifnames) {
		why := after.drift
		if !after.present {
			why = "table missing"
		}
		return fmt.Errorf("verify router advertisement drop: table ip6 %s after writing it for %q: %s (devices %q)",
			RATableName, devices, why, after.ifnames)
	}
	if keyed {
		inPlace.Store(key, true)
	}
	attrs := []any{"table", "ip6 " + RATableName, "device", devices}
	switch {
	case before.drift != "":
		log.Warn("router advertisement drop repaired", append([]any{"repaired", before.drift}, attrs...)...)
	case before.present:
		log.Info("router advertisement drop moved to another device",
			append([]any{"old_device", strings.Join(before.ifnames, ",")}, attrs...)...)
	case wasInPlace:
		log.Warn("router advertisement drop repaired", append([]any{"repaired", "table ip6 " + RATableName + " missing"}, attrs...)...)
	default:
		log.Info("router advertisement drop installed", attrs...)
	}
	return nil
}

// DeleteRADrop removes weft's ip6 weft-ra table and nothing else; an absent table is
// not an error. Like the masquerade table, the agent leaves it in place on shutdown:
// the device outlives the agent, and so must the drop.
func DeleteRADrop(h Host) error {
	if key, ok := placeKeyOf(h, raKey); ok {
		inPlace.Delete(key) // a table deleted on purpose is not a repair for a later EnsureRADrop
	}
	c, err := conn(h)
	if err != nil {
		return fmt.Errorf("delete router advertisement drop: %w", err)
	}
	if old, err := raTable(c); err != nil || old == nil {
		if err != nil {
			return fmt.Errorf("delete router advertisement drop: %w", err)
		}
		return nil
	}
	t := &nftables.Table{Name: RATableName, Family: nftables.TableFamilyIPv6}
	c.AddTable(t) // create-if-absent: the delete cannot fail with ENOENT if it vanished meanwhile
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables table ip6 %s: %w", RATableName, err)
	}
	return nil
}
