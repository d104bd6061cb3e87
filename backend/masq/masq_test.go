package masq

import (
	"errors"
	"log/slog"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/weftnet/weft/host"
	"github.com/weftnet/weft/test/nettest"
	"github.com/weftnet/weft/test/testlog"
)

var podRules = Rules{
	Network: netip.MustParsePrefix("10.244.0.0/16"),
	Subnet:  netip.MustParsePrefix("10.244.1.0/24"),
}

// nft runs the nft CLI inside n (for inspection only) and fails the test on error.
func nft(t *testing.T, n *nettest.NS, args ...string) string {
	t.Helper()
	out, err := n.Exec(t, "nft", args...)
	if err != nil {
		t.Fatalf("nft %s in %s: %v: %s", strings.Join(args, " "), n.Name, err, out)
	}
	return out
}

// ruleHandles lists the handles of the rules in weft's chain.
func ruleHandles(t *testing.T, fd int) []uint64 {
	t.Helper()
	return chainHandles(t, fd, nftables.TableFamilyIPv4, TableName, ChainName)
}

// chainHandles lists the handles of the rules in table/chain of family.
func chainHandles(t *testing.T, fd int, family nftables.TableFamily, table, chain string) []uint64 {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Name: table, Family: family}
	rules, err := c.GetRules(tbl, &nftables.Chain{Name: chain, Table: tbl})
	if err != nil {
		t.Fatalf("get rules of %s %s: %v", table, chain, err)
	}
	var hs []uint64
	for _, r := range rules {
		hs = append(hs, r.Handle)
	}
	return hs
}

// wantInOrder fails unless every pattern matches text, each after the previous one.
func wantInOrder(t *testing.T, text string, patterns ...string) {
	t.Helper()
	rest := text
	for _, p := range patterns {
		loc := regexp.MustCompile(p).FindStringIndex(rest)
		if loc == nil {
			t.Fatalf("ruleset lacks %q after the previous rules:\n%s", p, text)
		}
		rest = rest[loc[1]:]
	}
}

func TestEnsureIdempotent(t *testing.T) {
	nettest.Privileged(t)
	n := nettest.NewNS(t, "masq")
	nsh := openHost(t, n)
	fd := nsh.Fd()
	log := testlog.New(t, slog.LevelDebug)

	if r, err := Current(nsh); r != nil || err != nil {
		t.Fatalf("Current before Ensure = %+v, %v; want nil, nil", r, err)
	}
	if err := Ensure(nsh, podRules, log); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	first := ruleHandles(t, fd)
	if err := Ensure(nsh, podRules, log); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	if second := ruleHandles(t, fd); len(first) != 6 || !equal(first, second) {
		t.Fatalf("rule handles %v after first Ensure, %v after second; want the same 6", first, second)
	}
	want := podRules
	want.VXLANPort = 8472
	if got, err := Current(nsh); err != nil || *got != want {
		t.Fatalf("Current = %+v, %v; want %+v", got, err, want)
	}

	if tables := nft(t, n, "list", "tables"); strings.Count(tables, "table") != 1 || !strings.Contains(tables, "table ip weft") {
		t.Fatalf("nft list tables = %q, want only table ip weft", tables)
	}
	ruleset := nft(t, n, "list", "ruleset")
	if c := strings.Count(ruleset, "counter packets"); c != 6 {
		t.Fatalf("ruleset has %d rules, want 6:\n%s", c, ruleset)
	}
	wantInOrder(t, ruleset,
		`type nat hook postrouting priority srcnat; policy accept;`,
		`meta mark & 0x00004000 == 0x00004000 counter .* return`,
		`udp dport 8472 counter .* return`,
		`ip saddr 10\.244\.0\.0/16 ip daddr 10\.244\.0\.0/16 counter .* return`,
		`ip saddr 10\.244\.0\.0/16 ip daddr != 224\.0\.0\.0/4 counter .* masquerade fully-random`,
		`ip saddr != 10\.244\.0\.0/16 ip daddr 10\.244\.1\.0/24 counter .* return`,
		`ip saddr != 10\.244\.0\.0/16 ip daddr 10\.244\.0\.0/16 counter .* masquerade fully-random`,
	)
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestEnsureReplacesOtherNetwork(t *testing.T) {
	nettest.Privileged(t)
	n := nettest.NewNS(t, "masq")
	nsh := openHost(t, n)
	log := testlog.New(t, slog.LevelDebug)

	if err := Ensure(nsh, podRules, log); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	next := Rules{Network: netip.MustParsePrefix("10.96.0.0/12"), Subnet: netip.MustParsePrefix("10.96.3.0/24"), VXLANPort: 4789}
	if err := Ensure(nsh, next, log); err != nil {
		t.Fatalf("Ensure with another network: %v", err)
	}
	if got, err := Current(nsh); err != nil || *got != next {
		t.Fatalf("Current = %+v, %v; want %+v", got, err, next)
	}
	ruleset := nft(t, n, "list", "ruleset")
	for _, old := range []string{"10.244.", "8472"} {
		if strings.Contains(ruleset, old) {
			t.Fatalf("ruleset still mentions %s:\n%s", old, ruleset)
		}
	}
	wantInOrder(t, ruleset, `udp dport 4789`, `ip daddr 10\.96\.3\.0/24`)
	if c := strings.Count(ruleset, "counter packets"); c != 6 {
		t.Fatalf("ruleset has %d rules, want 6:\n%s", c, ruleset)
	}

	// An IPv6 Network alone moves the rules to an ip6 table; the ip table goes.
	v6 := Rules{IPv6Network: netip.MustParsePrefix("fd00:10::/48"), IPv6Subnet: netip.MustParsePrefix("fd00:10:0:7::/64"), VXLANPort: 8472}
	if err := Ensure(nsh, v6, log); err != nil {
		t.Fatalf("Ensure with IPv6 network: %v", err)
	}
	if tables := nft(t, n, "list", "tables"); strings.TrimSpace(tables) != "table ip6 weft" {
		t.Fatalf("nft list tables = %q, want only table ip6 weft", tables)
	}
	wantInOrder(t, nft(t, n, "list", "ruleset"),
		`ip6 saddr fd00:10::/48 ip6 daddr != ff00::/8 counter .* masquerade fully-random`,
		`ip6 saddr != fd00:10::/48 ip6 daddr fd00:10:0:7::/64 counter .* return`)
	if got, err := Current(nsh); err != nil || *got != v6 {
		t.Fatalf("Current = %+v, %v; want %+v", got, err, v6)
	}
}

func TestEnsureRepairsDrift(t *testing.T) {
	nettest.Privileged(t)
	n := nettest.NewNS(t, "masq")
	nsh := openHost(t, n)
	fd := nsh.Fd()
	log := testlog.New(t, slog.LevelDebug)

	if err := Ensure(nsh, podRules, log); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	// Someone deletes the VXLAN rule by hand and appends one of their own.
	handles := ruleHandles(t, fd)
	nft(t, n, "delete", "rule", "ip", "weft", "postrouting", "handle", strconv.FormatUint(handles[1], 10))
	nft(t, n, "add", "rule", "ip", "weft", "postrouting", "ip", "daddr", "203.0.113.0/24", "accept")
	if got, err := Current(nsh); !errors.Is(err, ErrDrift) {
		t.Fatalf("Current after hand edit = %+v, %v; want ErrDrift", got, err)
	}
	if err := Ensure(nsh, podRules, log); err != nil {
		t.Fatalf("Ensure after hand edit: %v", err)
	}
	ruleset := nft(t, n, "list", "ruleset")
	if strings.Contains(ruleset, "203.0.113.0") || !strings.Contains(ruleset, "udp dport 8472") {
		t.Fatalf("Ensure did not repair the table:\n%s", ruleset)
	}

	if err := Delete(nsh); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := Delete(nsh); err != nil {
		t.Fatalf("Delete of an absent table: %v", err)
	}
	if got, err := Current(nsh); got != nil || err != nil {
		t.Fatalf("Current after Delete = %+v, %v; want nil, nil", got, err)
	}
	if tables := nft(t, n, "list", "tables"); strings.TrimSpace(tables) != "" {
		t.Fatalf("tables left after Delete: %q", tables)
	}
}

func TestEnsureInvalid(t *testing.T) {
	// Validation happens before any kernel access, so this needs no privileges.
	err := Ensure(nil, Rules{Network: netip.MustParsePrefix("10.244.0.0/16")}, slog.New(slog.DiscardHandler))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Ensure without a subnet = %v, want ErrInvalid", err)
	}
}

// TestEnsureRepairs: what the agent's resync relies on. Ensure with the rules in
// place writes and logs nothing (above Debug); every kind of damage is repaired and
// logged once at Warn with what was wrong.
func TestEnsureRepairs(t *testing.T) {
	nettest.Privileged(t)
	n := nettest.NewNS(t, "masq")
	nsh := openHost(t, n)
	fd := nsh.Fd()
	log, logs := captureLog(t)
	want := podRules
	want.VXLANPort = 8472

	if err := Ensure(nsh, podRules, log); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if l := logs.take(); !strings.Contains(l, `level=INFO msg="masquerade rules installed"`) {
		t.Fatalf("first Ensure logged %q, want an Info install", l)
	}
	start := time.Now()
	const calls = 20
	for range calls {
		if err := Ensure(nsh, podRules, log); err != nil {
			t.Fatalf("Ensure with the rules in place: %v", err)
		}
	}
	t.Logf("Ensure with the rules in place: %v per call", time.Since(start)/calls)
	if l := logs.take(); l != "" {
		t.Fatalf("Ensure with the rules in place logged %q", l)
	}

	for _, tc := range []struct {
		name   string
		damage func() []string // nft arguments
		reason string
	}{
		{"deleted table", func() []string { return []string{"delete table ip weft"} }, "table weft missing"},
		{"deleted chain", func() []string { return []string{"delete chain ip weft postrouting"} }, `chain \"postrouting\" missing`},
		{"flushed chain", func() []string { return []string{"flush chain ip weft postrouting"} }, "0 rules, want 6"},
		{"changed rule", func() []string {
			h := ruleHandles(t, fd)[2]
			return []string{"replace rule ip weft postrouting handle " + strconv.FormatUint(h, 10) +
				" ip saddr 10.244.0.0/16 ip daddr 10.0.0.0/8 counter return"}
		}, "rule 3 (handle"}, // nft writes 10.0.0.0/8 as a 1-byte load, which no weft rule has
		{"deleted rule", func() []string {
			return []string{"delete rule ip weft postrouting handle " + strconv.FormatUint(ruleHandles(t, fd)[0], 10)}
		}, "5 rules, want 6"},
		{"added rule", func() []string {
			return []string{"add rule ip weft postrouting ip daddr 203.0.113.0/24 accept"}
		}, "rule 7 (handle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range tc.damage() {
				nft(t, n, strings.Fields(cmd)...)
			}
			if got, err := Current(nsh); err == nil && got != nil && *got == want {
				t.Fatalf("the damage did not change what Current reads: %+v", got)
			}
			if err := Ensure(nsh, podRules, log); err != nil {
				t.Fatalf("Ensure after %s: %v", tc.name, err)
			}
			if got, err := Current(nsh); err != nil || got == nil || *got != want {
				t.Fatalf("Current after repair = %+v, %v; want %+v", got, err, want)
			}
			l := logs.take()
			if strings.Count(l, "\n") != 0 || !strings.Contains(l, `level=WARN msg="masquerade rules repaired"`) || !strings.Contains(l, tc.reason) {
				t.Fatalf("repair logged %q, want one Warn with %q", l, tc.reason)
			}
			before := ruleHandles(t, fd)
			if err := Ensure(nsh, podRules, log); err != nil {
				t.Fatalf("Ensure after the repair: %v", err)
			}
			if after := ruleHandles(t, fd); !equal(before, after) {
				t.Fatalf("rule handles %v changed to %v by an Ensure with nothing to do", before, after)
			}
			if l := logs.take(); l != "" {
				t.Fatalf("Ensure after the repair logged %q", l)
			}
		})
	}

	// A table deleted on purpose (Delete) is installed again without a repair warning.
	if err := Delete(nsh); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := Ensure(nsh, podRules, log); err != nil {
		t.Fatalf("Ensure after Delete: %v", err)
	}
	if l := logs.take(); !strings.Contains(l, `level=INFO msg="masquerade rules installed"`) {
		t.Fatalf("Ensure after Delete logged %q, want an Info install", l)
	}
}

var _ Host = (*host.NS)(nil)

// openHost opens n for masq, closed in t.Cleanup.
func openHost(t *testing.T, n *nettest.NS) *host.NS {
	t.Helper()
	h, err := host.Open(n.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// TestEnsureDualStack: a dual-stack Rules gets one table per family with the same six
// rules, is idempotent per family, a repair of one family's table leaves the other's
// alone, and a family no longer given loses its table.
func TestEnsureDualStack(t *testing.T) {
	nettest.Privileged(t)
	n := nettest.NewNS(t, "masq")
	nsh := openHost(t, n)
	fd := nsh.Fd()
	log, logs := captureLog(t)
	handles6 := func() []uint64 { return chainHandles(t, fd, nftables.TableFamilyIPv6, TableName, ChainName) }

	if err := Ensure(nsh, dualRules, log); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if l := logs.take(); strings.Count(l, `msg="masquerade rules installed"`) != 2 ||
		!strings.Contains(l, `table="ip weft"`) || !strings.Contains(l, `table="ip6 weft"`) {
		t.Fatalf("first Ensure logged %q, want an Info install per family", l)
	}
	want := dualRules
	want.VXLANPort = 8472
	if got, err := Current(nsh); err != nil || got == nil || *got != want {
		t.Fatalf("Current = %+v, %v; want %+v", got, err, want)
	}
	if tables := nft(t, n, "list", "tables"); strings.Count(tables, "table") != 2 ||
		!strings.Contains(tables, "table ip weft") || !strings.Contains(tables, "table ip6 weft") {
		t.Fatalf("nft list tables = %q, want table ip weft and table ip6 weft", tables)
	}
	table6 := nft(t, n, "list", "table", "ip6", TableName)
	if c := strings.Count(table6, "counter packets"); c != 6 {
		t.Fatalf("table ip6 weft has %d rules, want 6:\n%s", c, table6)
	}
	wantInOrder(t, table6,
		`type nat hook postrouting priority srcnat; policy accept;`,
		`meta mark & 0x00004000 == 0x00004000 counter .* return`,
		`udp dport 8472 counter .* return`,
		`ip6 saddr fd00:10::/48 ip6 daddr fd00:10::/48 counter .* return`,
		`ip6 saddr fd00:10::/48 ip6 daddr != ff00::/8 counter .* masquerade fully-random`,
		`ip6 saddr != fd00:10::/48 ip6 daddr fd00:10:0:1::/64 counter .* return`,
		`ip6 saddr != fd00:10::/48 ip6 daddr fd00:10::/48 counter .* masquerade fully-random`,
	)
	wantInOrder(t, nft(t, n, "list", "table", "ip", TableName),
		`ip saddr 10\.244\.0\.0/16 ip daddr != 224\.0\.0\.0/4 counter .* masquerade fully-random`)

	first4, first6 := ruleHandles(t, fd), handles6()
	if err := Ensure(nsh, dualRules, log); err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	if l := logs.take(); l != "" {
		t.Fatalf("Ensure with the rules in place logged %q", l)
	}
	if h4, h6 := ruleHandles(t, fd), handles6(); !equal(first4, h4) || !equal(first6, h6) {
		t.Fatalf("rule handles %v %v changed to %v %v by an Ensure with nothing to do", first4, first6, h4, h6)
	}

	// Damage to the IPv6 table is repaired there; the IPv4 table is not rewritten.
	nft(t, n, "flush", "chain", "ip6", TableName, ChainName)
	if got, err := Current(nsh); !errors.Is(err, ErrDrift) || !strings.Contains(err.Error(), "table ip6 weft") {
		t.Fatalf("Current after flushing ip6 weft = %+v, %v; want ErrDrift naming table ip6 weft", got, err)
	}
	if err := Ensure(nsh, dualRules, log); err != nil {
		t.Fatalf("Ensure after the flush: %v", err)
	}
	if l := logs.take(); strings.Count(l, "\n") != 0 || !strings.Contains(l, `level=WARN msg="masquerade rules repaired" repaired="0 rules, want 6" table="ip6 weft"`) {
		t.Fatalf("repair logged %q, want one Warn for ip6 weft", l)
	}
	if h4 := ruleHandles(t, fd); !equal(first4, h4) {
		t.Fatalf("ip weft rule handles %v changed to %v by a repair of ip6 weft", first4, h4)
	}

	// Dual stack → IPv6-only: the ip table goes.
	if err := Ensure(nsh, podRules6, log); err != nil {
		t.Fatalf("Ensure IPv6-only: %v", err)
	}
	if l := logs.take(); !strings.Contains(l, `msg="masquerade rules of a family no longer configured removed" table="ip weft"`) {
		t.Fatalf("Ensure IPv6-only logged %q, want the ip table's removal", l)
	}
	if tables := nft(t, n, "list", "tables"); strings.TrimSpace(tables) != "table ip6 weft" {
		t.Fatalf("nft list tables = %q, want only table ip6 weft", tables)
	}
	want6 := podRules6
	want6.VXLANPort = 8472
	if got, err := Current(nsh); err != nil || got == nil || *got != want6 {
		t.Fatalf("Current = %+v, %v; want %+v", got, err, want6)
	}

	// → dual stack → IPv4-only: the ip6 table goes.
	if err := Ensure(nsh, dualRules, log); err != nil {
		t.Fatalf("Ensure dual stack again: %v", err)
	}
	if err := Ensure(nsh, podRules, log); err != nil {
		t.Fatalf("Ensure IPv4-only: %v", err)
	}
	if tables := nft(t, n, "list", "tables"); strings.TrimSpace(tables) != "table ip weft" {
		t.Fatalf("nft list tables = %q, want only table ip weft", tables)
	}
	want4 := podRules
	want4.VXLANPort = 8472
	if got, err := Current(nsh); err != nil || got == nil || *got != want4 {
		t.Fatalf("Current = %+v, %v; want %+v", got, err, want4)
	}
	_ = logs.take()

	// Tables that disagree on the VXLAN port are drift for Current; Ensure repairs
	// the one that differs from what it is given.
	c, err := conn(nsh)
	if err != nil {
		t.Fatal(err)
	}
	if err := replace(c, famRules{Network: podRules6.IPv6Network, Subnet: podRules6.IPv6Subnet, VXLANPort: 4789}, false); err != nil {
		t.Fatalf("write an ip6 table for port 4789: %v", err)
	}
	if got, err := Current(nsh); !errors.Is(err, ErrDrift) || !strings.Contains(err.Error(), "VXLAN port 8472 in table ip weft, 4789 in table ip6 weft") {
		t.Fatalf("Current with two ports = %+v, %v; want ErrDrift naming both", got, err)
	}
	if err := Ensure(nsh, dualRules, log); err != nil {
		t.Fatalf("Ensure after the port change: %v", err)
	}
	if l := logs.take(); !strings.Contains(l, `msg="replacing masquerade rules" table="ip6 weft"`) || strings.Contains(l, `table="ip weft"`) {
		t.Fatalf("Ensure after the port change logged %q, want only the ip6 table replaced", l)
	}
	if got, err := Current(nsh); err != nil || got == nil || *got != want {
		t.Fatalf("Current = %+v, %v; want %+v", got, err, want)
	}
}
