package masq

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Legacy iptables (xtables) is not nftables: its tables are invisible to netlink
// listings, so ForwardBlockers reads the FORWARD chain of a legacy filter table through
// the getsockopt interface iptables-legacy itself uses (linux/netfilter_ipv4/ip_tables.h,
// linux/netfilter_ipv6/ip6_tables.h). It asks only for a table the kernel already
// lists in /proc/net/ip{,6}_tables_names: asking for an absent one would make the
// kernel instantiate it.

const (
	soGetInfo    = 64 // IPT_SO_GET_INFO, IP6T_SO_GET_INFO
	soGetEntries = 65 // IPT_SO_GET_ENTRIES, IP6T_SO_GET_ENTRIES
	hookForward  = 2  // NF_INET_FORWARD
	tableNameLen = 32 // XT_TABLE_MAXNAMELEN
	verdictDrop  = -1 // -NF_DROP - 1
	verdictAcc   = -2 // -NF_ACCEPT - 1
)

// xtLayout holds the offsets of struct ipt_entry / ip6t_entry fields.
type xtLayout struct {
	addrLen                  int // 4 or 16
	src, dst, smsk, dmsk     int // offsets in the entry
	ifaces                   int // iniface..outiface_mask: 4 × IFNAMSIZ bytes
	proto, invflags          int // proto through invflags (and flags, tos) must be 0
	targetOffset, nextOffset int
	size                     int // sizeof(struct ipt_entry): where matches start
}

// layoutFor returns the entry layout of the IPv4 or IPv6 table.
func layoutFor(is6 bool) xtLayout {
	// struct ipt_entry { struct ipt_ip ip (84); u32 nfcache; u16 target_offset;
	// u16 next_offset; u32 comefrom; struct xt_counters counters; }
	// struct ip6t_entry { struct ip6t_ip6 ipv6 (136); ... the same fields }
	align := int(unsafe.Alignof(uint64(0)))
	ipLen, l := 84, xtLayout{addrLen: 4, src: 0, dst: 4, smsk: 8, dmsk: 12, ifaces: 16, proto: 80, invflags: 83}
	if is6 {
		ipLen, l = 136, xtLayout{addrLen: 16, src: 0, dst: 16, smsk: 32, dmsk: 48, ifaces: 64, proto: 128, invflags: 132}
	}
	l.targetOffset, l.nextOffset = ipLen+4, ipLen+6
	counters := (ipLen + 12 + align - 1) / align * align
	l.size = counters + 16
	return l
}

// legacyBlocker reports the legacy FORWARD chain of network's family in h when
// it drops network's traffic (see ForwardBlockers).
func legacyBlocker(h Host, network netip.Prefix) (b Blocker, ok bool, err error) {
	err = h.Do(func() error {
		var err error
		b, ok, err = readLegacy(network)
		return err
	})
	return b, ok, err
}

// readLegacy reads the legacy filter table of this thread's netns.
func readLegacy(network netip.Prefix) (Blocker, bool, error) {
	is6 := network.Addr().Is6()
	names, domain, level, fam := "/proc/thread-self/net/ip_tables_names", unix.AF_INET, unix.SOL_IP, "ip"
	if is6 {
		names, domain, level, fam = "/proc/thread-self/net/ip6_tables_names", unix.AF_INET6, unix.SOL_IPV6, "ip6"
	}
	present, err := listsTable(names, "filter")
	if err != nil || !present {
		return Blocker{}, false, err
	}
	fd, err := unix.Socket(domain, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return Blocker{}, false, fmt.Errorf("socket for legacy iptables: %w", err)
	}
	defer unix.Close(fd)

	var (
		entry, underflow, hdr int
		buf                   []byte
		forward               bool
	)
	for try := 1; ; try++ {
		entry, underflow, hdr, buf, forward, err = legacyEntries(fd, level)
		if !errors.Is(err, unix.EAGAIN) || try == 3 {
			break
		}
		// EAGAIN: the table changed between the two calls; read it again.
	}
	if err != nil {
		return Blocker{}, false, fmt.Errorf("read legacy %s filter table: %w", fam, err)
	}
	if !forward {
		return Blocker{}, false, nil
	}
	drop, err := legacyForwardDrops(buf[hdr:], entry, underflow, layoutFor(is6), network)
	if err != nil {
		return Blocker{}, false, fmt.Errorf("legacy %s filter table: %w", fam, err)
	}
	return Blocker{Family: fam, Table: "filter", Chain: "FORWARD", Verdict: "drop", Legacy: true}, drop, nil
}

// legacyEntries reads the filter table's info and then its entries: the offsets of the
// FORWARD chain's first rule and policy in the entries, the entries' header length and
// the buffer. forward is false when the table has no FORWARD hook.
func legacyEntries(fd, level int) (entry, underflow, hdr int, buf []byte, forward bool, err error) {
	// struct ipt_getinfo { char name[32]; u32 valid_hooks; u32 hook_entry[5];
	// u32 underflow[5]; u32 num_entries; u32 size; }
	info := make([]byte, tableNameLen+4+20+20+4+4)
	copy(info, "filter")
	if err := getsockopt(fd, level, soGetInfo, info); err != nil {
		return 0, 0, 0, nil, false, fmt.Errorf("info: %w", err)
	}
	ne := binary.NativeEndian
	u32 := func(off int) int { return int(ne.Uint32(info[off:])) }
	if u32(tableNameLen)&(1<<hookForward) == 0 {
		return 0, 0, 0, nil, false, nil
	}
	entry, underflow, size := u32(tableNameLen+4+4*hookForward), u32(tableNameLen+24+4*hookForward), u32(tableNameLen+48)

	// struct ipt_get_entries { char name[32]; u32 size; struct ipt_entry entrytable[]; }
	align := int(unsafe.Alignof(uint64(0)))
	hdr = (tableNameLen + 4 + align - 1) / align * align
	buf = make([]byte, hdr+size)
	copy(buf, "filter")
	ne.PutUint32(buf[tableNameLen:], uint32(size))
	if err := getsockopt(fd, level, soGetEntries, buf); err != nil {
		return 0, 0, 0, nil, false, fmt.Errorf("entries: %w", err)
	}
	return entry, underflow, hdr, buf, true, nil
}

// listsTable reports whether a /proc/net/*_tables_names file lists table; a missing
// file (no legacy iptables in the kernel) lists nothing.
func listsTable(path, table string) (bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if sc.Text() == table {
			return true, nil
		}
	}
	return false, nil
}

// getsockopt is getsockopt(2) with a buffer that is both input and output.
func getsockopt(fd, level, opt int, buf []byte) error {
	n := uint32(len(buf))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// legacyForwardDrops walks the FORWARD chain's own rules (entries from entry up to the
// policy at underflow) and reports whether the policy is DROP and no "-s|-d <prefix
// covering network> [-m comment] -j ACCEPT" pair comes before it.
func legacyForwardDrops(tbl []byte, entry, underflow int, l xtLayout, network netip.Prefix) (bool, error) {
	var from, to bool
	off := entry
	for {
		if off < 0 || off+l.size > len(tbl) {
			return false, fmt.Errorf("entry at %d out of the %d-byte table", off, len(tbl))
		}
		e := tbl[off:]
		tOff, next := int(binary.NativeEndian.Uint16(e[l.targetOffset:])), int(binary.NativeEndian.Uint16(e[l.nextOffset:]))
		if tOff < l.size || next < tOff+32+4 || off+next > len(tbl) {
			return false, fmt.Errorf("malformed entry at %d", off)
		}
		// struct xt_entry_target { u16 target_size; char name[29]; u8 revision; } then,
		// for the standard target (name ""), int verdict.
		t := e[tOff:next]
		standard := t[2] == 0
		verdict := int32(binary.NativeEndian.Uint32(t[32:]))
		if off == underflow {
			return standard && verdict == verdictDrop && !(from && to), nil
		}
		if off > underflow {
			return false, fmt.Errorf("no policy entry at %d", underflow)
		}
		if standard && verdict == verdictAcc && onlyComments(e[l.size:tOff]) {
			if p, dst, ok := legacyPrefix(e, l); ok && p.Bits() <= network.Bits() && p.Contains(network.Addr()) {
				from, to = from || !dst, to || dst
			}
		}
		off += next
	}
}

// onlyComments reports whether an entry's matches are all "comment" matches.
func onlyComments(m []byte) bool {
	for len(m) > 0 {
		// struct xt_entry_match { u16 match_size; char name[29]; u8 revision; } + data
		if len(m) < 32 {
			return false
		}
		size := int(binary.NativeEndian.Uint16(m))
		name, _, _ := bytes.Cut(m[2:31], []byte{0})
		if size < 32 || size > len(m) || string(name) != "comment" {
			return false
		}
		m = m[size:]
	}
	return true
}

// legacyPrefix decodes an entry that matches exactly one address prefix (source or
// destination) and nothing else: no interface, protocol or inversion.
func legacyPrefix(e []byte, l xtLayout) (netip.Prefix, bool, bool) {
	zero := func(b []byte) bool { return bytes.Count(b, []byte{0}) == len(b) }
	n := l.addrLen
	if !zero(e[l.ifaces:l.ifaces+64]) || !zero(e[l.proto:l.invflags+1]) {
		return netip.Prefix{}, false, false
	}
	src, smsk := e[l.src:l.src+n], e[l.smsk:l.smsk+n]
	dst, dmsk := e[l.dst:l.dst+n], e[l.dmsk:l.dmsk+n]
	addr, mask, isDst := src, smsk, false
	switch {
	case zero(smsk) && !zero(dmsk):
		addr, mask, isDst = dst, dmsk, true
	case zero(dmsk) && !zero(smsk):
	default:
		return netip.Prefix{}, false, false
	}
	ones := 0
	for _, b := range mask {
		ones += bits.OnesCount8(b)
	}
	if !bytes.Equal(mask, netipMask(ones, n)) {
		return netip.Prefix{}, false, false
	}
	a, _ := netip.AddrFromSlice(addr)
	p := netip.PrefixFrom(a, ones)
	return p, isDst, p.Masked() == p
}
