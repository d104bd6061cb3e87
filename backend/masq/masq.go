package masq

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"

	hostnft "github.com/weftnet/weft/host/nft"
)

// TableName is the nftables table weft owns (in family ip, or ip6 for IPv6).
const TableName = "weft"

// ChainName is the base chain in TableName that holds the rules.
const ChainName = "postrouting"

// families are the table families weft may have written, in lookup order.
var families = []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6}

// familyName is the nft keyword of a table family.
func familyName(f nftables.TableFamily) string {
	if f == nftables.TableFamilyIPv6 {
		return "ip6"
	}
	return "ip"
}

// conn opens an nftables connection in h.
func conn(h Host) (*nftables.Conn, error) { return hostnft.Conn(h) }

// Ensure installs/replaces weft's tables so that each holds exactly the rules for r:
// table ip weft for r's IPv4 Network, table ip6 weft for its IPv6 Network; the table
// of a family r does not have is removed. It is idempotent and cheap: when the kernel
// already holds those rules nothing is written and nothing is logged above Debug, so
// the agent calls it every resync interval. A table from a previous run (other
// Network, Subnet or port) or one edited by hand (a deleted chain, a flushed chain, a
// changed, added or deleted rule) is replaced in one atomic batch per family; a
// repair is logged at Warn with what was wrong, as is a table that was in place
// earlier in this process and has vanished. A nil log discards.
func Ensure(h Host, r Rules, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	want, err := r.normalize()
	if err != nil {
		return err
	}
	c, err := conn(h)
	if err != nil {
		return fmt.Errorf("ensure masquerade rules: %w", err)
	}
	for _, fam := range families {
		if err := ensureFamily(h, c, fam, want.of(fam), log); err != nil {
			return err
		}
	}
	return nil
}

// masqKey is the inPlace key of a family's masquerade table.
func masqKey(fam nftables.TableFamily) string { return "masq " + familyName(fam) }

// ensureFamily makes weft's table of family fam hold exactly want's rules, or
// removes it when want is nil.
func ensureFamily(h Host, c *nftables.Conn, fam nftables.TableFamily, want *famRules, log *slog.Logger) error {
	table := familyName(fam) + " " + TableName
	key, keyed := placeKeyOf(h, masqKey(fam))
	_, wasInPlace := inPlace.Load(key)
	cur, err := readFamily(c, fam)
	drift := errors.Is(err, ErrDrift)
	if err != nil && !drift {
		return fmt.Errorf("ensure masquerade rules (table %s): %w", table, err)
	}
	present := cur != nil || drift
	if want == nil {
		if keyed {
			inPlace.Delete(key)
		}
		if !present {
			return nil
		}
		if err := deleteTables(c, []nftables.TableFamily{fam}); err != nil {
			return err
		}
		attrs := []any{"table", table}
		if cur != nil {
			attrs = append(attrs, "old_network", cur.Network, "old_subnet", cur.Subnet)
		}
		log.Info("masquerade rules of a family no longer configured removed", attrs...)
		return nil
	}
	var repaired string
	switch {
	case drift:
		repaired = strings.TrimPrefix(err.Error(), ErrDrift.Error()+": ")
	case cur != nil && *cur == *want:
		if keyed {
			inPlace.Store(key, true)
		}
		log.Debug("masquerade rules already in place", "table", table, "network", want.Network, "subnet", want.Subnet)
		return nil
	case cur != nil:
		log.Info("replacing masquerade rules", "table", table, "old_network", cur.Network, "old_subnet", cur.Subnet,
			"old_vxlan_port", cur.VXLANPort, "network", want.Network, "subnet", want.Subnet, "vxlan_port", want.VXLANPort)
	case wasInPlace:
		repaired = fmt.Sprintf("table %s missing", TableName)
	}
	if err := replace(c, *want, present); err != nil {
		return err
	}
	// Read back: the kernel (or an old nftables module) could have dropped a flag.
	got, err := readFamily(c, fam)
	if err != nil {
		return fmt.Errorf("verify masquerade rules (table %s): %w", table, err)
	}
	if got == nil || *got != *want {
		return fmt.Errorf("verify masquerade rules (table %s): %w: read back %+v, want %+v", table, ErrDrift, got, *want)
	}
	if keyed {
		inPlace.Store(key, true)
	}
	attrs := []any{"table", table, "network", want.Network, "subnet", want.Subnet, "vxlan_port", want.VXLANPort}
	if repaired != "" {
		log.Warn("masquerade rules repaired", append([]any{"repaired", repaired}, attrs...)...)
		return nil
	}
	log.Info("masquerade rules installed", attrs...)
	return nil
}

// replace writes the table for normalized r in one batch: the existing table of r's
// family (present) is created-if-absent then deleted (so the delete cannot fail with
// ENOENT), and r's table is built again. nftables applies a batch as one transaction:
// packets see the old rules or the new ones, never an empty or half-built chain.
func replace(c *nftables.Conn, r famRules, present bool) error {
	if present {
		t := &nftables.Table{Name: TableName, Family: r.family()}
		c.AddTable(t)
		c.DelTable(t)
	}
	t := c.AddTable(&nftables.Table{Name: TableName, Family: r.family()})
	ch := c.AddChain(&nftables.Chain{
		Name:     ChainName,
		Table:    t,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	})
	is6 := r.Network.Addr().Is6()
	for _, s := range specs(r) {
		c.AddRule(&nftables.Rule{
			Table:    t,
			Chain:    ch,
			Exprs:    s.encode(is6),
			UserData: userdata.AppendString(nil, userdata.TypeComment, s.Comment),
		})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("write nftables table %s %s: %w", familyName(r.family()), TableName, err)
	}
	return nil
}

// Delete removes weft's table in every family; absent tables are not an error. The
// agent does not call it on SIGTERM (see doc.go).
func Delete(h Host) error {
	for _, fam := range families {
		if key, ok := placeKeyOf(h, masqKey(fam)); ok {
			inPlace.Delete(key) // a table deleted on purpose is not repaired by a later Ensure
		}
	}
	c, err := conn(h)
	if err != nil {
		return err
	}
	old, err := existing(c)
	if err != nil || len(old) == 0 {
		return err
	}
	return deleteTables(c, old)
}

// deleteTables deletes weft's table in each of fams in one batch.
func deleteTables(c *nftables.Conn, fams []nftables.TableFamily) error {
	for _, fam := range fams {
		t := &nftables.Table{Name: TableName, Family: fam}
		c.AddTable(t) // create-if-absent: the delete cannot fail with ENOENT if it vanished meanwhile
		c.DelTable(t)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables table %s: %w", TableName, err)
	}
	return nil
}

// existing lists the families that hold a weft table. A listing is cheap; a
// batch with a table delete is not, even when the table is absent (it made up
// most of an agent's start-up), so deletes are only queued for tables that
// exist.
func existing(c *nftables.Conn) ([]nftables.TableFamily, error) {
	ts, err := weftTables(c)
	fams := make([]nftables.TableFamily, 0, len(ts))
	for _, t := range ts {
		fams = append(fams, t.Family)
	}
	return fams, err
}

// weftTables returns weft's tables, in every family.
func weftTables(c *nftables.Conn) ([]*nftables.Table, error) {
	var found []*nftables.Table
	for _, fam := range families {
		ts, err := c.ListTablesOfFamily(fam)
		if err != nil {
			return nil, fmt.Errorf("list nftables tables: %w", err)
		}
		for _, t := range ts {
			if t.Name == TableName {
				found = append(found, t)
			}
		}
	}
	return found, nil
}

// Current reads back the installed rules of both families: (nil, nil) when weft has
// no table, an error wrapping ErrDrift when a table is not exactly what Ensure writes.
// A family without a table has zero prefixes in the result.
func Current(h Host) (*Rules, error) {
	c, err := conn(h)
	if err != nil {
		return nil, err
	}
	var out *Rules
	for _, fam := range families {
		fr, err := readFamily(c, fam)
		if err != nil {
			return nil, fmt.Errorf("table %s %s: %w", familyName(fam), TableName, err)
		}
		if fr == nil {
			continue
		}
		if out == nil {
			out = &Rules{VXLANPort: fr.VXLANPort}
		} else if out.VXLANPort != fr.VXLANPort {
			return nil, fmt.Errorf("%w: VXLAN port %d in table ip %s, %d in table ip6 %s",
				ErrDrift, out.VXLANPort, TableName, fr.VXLANPort, TableName)
		}
		if fam == nftables.TableFamilyIPv6 {
			out.IPv6Network, out.IPv6Subnet = fr.Network, fr.Subnet
		} else {
			out.Network, out.Subnet = fr.Network, fr.Subnet
		}
	}
	return out, nil
}

// readFamily reads weft's table of family fam: nil when there is none.
func readFamily(c *nftables.Conn, fam nftables.TableFamily) (*famRules, error) {
	ts, err := c.ListTablesOfFamily(fam)
	if err != nil {
		return nil, fmt.Errorf("list nftables %s tables: %w", familyName(fam), err)
	}
	for _, t := range ts {
		if t.Name == TableName {
			return readTable(c, t)
		}
	}
	return nil, nil
}

// readTable checks that t holds only weft's chain and decodes its rules.
func readTable(c *nftables.Conn, t *nftables.Table) (*famRules, error) {
	chains, err := c.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return nil, fmt.Errorf("list chains of %s %s: %w", familyName(t.Family), t.Name, err)
	}
	var ours *nftables.Chain
	for _, ch := range chains {
		if ch.Table.Name != t.Name {
			continue
		}
		if ch.Name != ChainName || ours != nil {
			return nil, fmt.Errorf("%w: unexpected chain %q", ErrDrift, ch.Name)
		}
		ours = ch
	}
	if err := checkChain(ours); err != nil {
		return nil, err
	}
	rules, err := c.GetRules(t, ours)
	if err != nil {
		return nil, fmt.Errorf("list rules of %s %s %s: %w", familyName(t.Family), t.Name, ChainName, err)
	}
	got := make([]ruleSpec, 0, len(rules))
	for i, rule := range rules {
		s, err := decode(rule.Exprs, t.Family == nftables.TableFamilyIPv6)
		if err != nil {
			return nil, fmt.Errorf("rule %d (handle %d): %w", i+1, rule.Handle, err)
		}
		got = append(got, s)
	}
	r, err := rulesFrom(got)
	if err != nil {
		return nil, err
	}
	if r.family() != t.Family {
		return nil, fmt.Errorf("%w: %s rules in a %s table", ErrDrift, familyName(r.family()), familyName(t.Family))
	}
	return r, nil
}

// checkChain verifies that the base chain is hooked where Ensure puts it.
func checkChain(ch *nftables.Chain) error {
	switch {
	case ch == nil:
		return fmt.Errorf("%w: chain %q missing", ErrDrift, ChainName)
	case ch.Type != nftables.ChainTypeNAT,
		ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookPostrouting,
		ch.Priority == nil || *ch.Priority != *nftables.ChainPriorityNATSource:
		return fmt.Errorf("%w: chain %q is not type nat hook postrouting priority srcnat", ErrDrift, ChainName)
	}
	return nil
}
