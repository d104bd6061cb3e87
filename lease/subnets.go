package lease

import (
	"math"
	"math/big"
	"math/rand/v2"
	"net/netip"
)

// PickWindow is how many free blocks, counted from SubnetMin (or
// IPv6SubnetMin), PickFree chooses among at random. Random choice keeps
// concurrent acquirers from all racing for the same block; a window keeps
// the used range compact, like flannel.
const PickWindow = 100

// TotalBlocks is the number of IPv4 blocks from SubnetMin to SubnetMax
// inclusive: 255 for a /16 with SubnetLen 24 (the first block is skipped).
func (n *Network) TotalBlocks() int {
	if !n.SubnetMin.Is4() || !n.SubnetMax.Is4() || n.SubnetLen < 1 || n.SubnetLen > 32 || n.SubnetMax.Less(n.SubnetMin) {
		return 0
	}
	shift := uint(32 - n.SubnetLen)
	return int(u32(n.SubnetMax)>>shift-u32(n.SubnetMin)>>shift) + 1
}

// Block returns the i-th IPv4 block (0 is SubnetMin); ok is false when i is
// out of range. IPv6 blocks are not paired with IPv4 blocks: a node's IPv6
// block is chosen on its own (flannel picks it at random).
func (n *Network) Block(i int) (v4 netip.Prefix, ok bool) {
	if i < 0 || i >= n.TotalBlocks() {
		return netip.Prefix{}, false
	}
	a := fromU32(u32(n.SubnetMin) + uint32(i)<<uint(32-n.SubnetLen))
	return netip.PrefixFrom(a, n.SubnetLen), true
}

// Index returns the position of IPv4 block p (0 is SubnetMin), or -1 when p
// is not a block between SubnetMin and SubnetMax.
func (n *Network) Index(p netip.Prefix) int {
	if !n.Fits(p) {
		return -1
	}
	return int((u32(p.Addr()) - u32(n.SubnetMin)) >> uint(32-n.SubnetLen))
}

// Contains reports whether addr is inside the IPv4 or IPv6 cluster Network
// of a family that is on.
func (n *Network) Contains(addr netip.Addr) bool {
	return (n.EnableIPv4 && n.Network.IsValid() && n.Network.Contains(addr)) ||
		(n.EnableIPv6 && n.IPv6Network.IsValid() && n.IPv6Network.Contains(addr))
}

// Fits reports whether p is an IPv4 block this config hands out: IPv4 on,
// length SubnetLen, aligned, between SubnetMin and SubnetMax.
func (n *Network) Fits(p netip.Prefix) bool {
	return n.EnableIPv4 && fits(p, n.SubnetLen, n.SubnetMin, n.SubnetMax) && p.Addr().Is4()
}

// FitsIPv6 is Fits for the IPv6 block of a dual-stack or IPv6-only lease.
func (n *Network) FitsIPv6(p netip.Prefix) bool {
	return n.EnableIPv6 && fits(p, n.IPv6SubnetLen, n.IPv6SubnetMin, n.IPv6SubnetMax) && p.Addr().Is6() && !p.Addr().Is4In6()
}

// FitsLease reports whether a lease is usable under this config: it has a
// block that fits for each family that is on, and none for a family that is
// off (as flannel's compatibility check: a dual-stack lease does not fit an
// IPv4-only config, nor an IPv4 lease an IPv6-only one).
func (n *Network) FitsLease(l Lease) bool {
	ok4 := n.Fits(l.Subnet) || (!n.EnableIPv4 && !l.Subnet.IsValid())
	ok6 := n.FitsIPv6(l.IPv6Subnet) || (!n.EnableIPv6 && !l.IPv6Subnet.IsValid())
	return ok4 && ok6
}

func fits(p netip.Prefix, bits int, lo, hi netip.Addr) bool {
	return p.IsValid() && p.Bits() == bits && p.Masked() == p &&
		!p.Addr().Less(lo) && !hi.Less(p.Addr())
}

// PickFree chooses, for each family that is on, a free block at random
// among the first PickWindow free blocks from SubnetMin (IPv6SubnetMin).
// The two families are chosen independently. taken holds the blocks in use,
// IPv4 and IPv6 alike; a block is free when it overlaps none of them. The
// work is proportional to len(taken) + PickWindow, never to the size of the
// range (a /32 IPv6Network with /64 blocks has 2^32 of them). When a family
// has no free block it returns an *OutOfSubnetsError for that family.
func (n *Network) PickFree(taken map[netip.Prefix]bool) (v4, v6 netip.Prefix, err error) {
	if n.EnableIPv4 {
		if v4, err = n.ipv4Range().pick(newOccupied(taken, false, n.SubnetLen)); err != nil {
			return netip.Prefix{}, netip.Prefix{}, err
		}
	}
	if n.EnableIPv6 {
		if v6, err = n.ipv6Range().pick(newOccupied(taken, true, n.IPv6SubnetLen)); err != nil {
			return netip.Prefix{}, netip.Prefix{}, err
		}
	}
	return v4, v6, nil
}

// blockRange is the blocks of one family that a config hands out.
type blockRange struct {
	lo, hi netip.Addr
	bits   int
	ipv6   bool
}

func (n *Network) ipv4Range() blockRange {
	return blockRange{lo: n.SubnetMin, hi: n.SubnetMax, bits: n.SubnetLen}
}

func (n *Network) ipv6Range() blockRange {
	return blockRange{lo: n.IPv6SubnetMin, hi: n.IPv6SubnetMax, bits: n.IPv6SubnetLen, ipv6: true}
}

func (r blockRange) valid() bool {
	return r.lo.IsValid() && r.hi.IsValid() && r.lo.Is6() == r.ipv6 && r.hi.Is6() == r.ipv6 &&
		r.bits >= 0 && r.bits <= r.lo.BitLen() && !r.hi.Less(r.lo)
}

// total counts the blocks from lo to hi, capped at math.MaxInt.
func (r blockRange) total() int {
	if !r.valid() {
		return 0
	}
	shift := uint(r.lo.BitLen() - r.bits)
	lo := new(big.Int).Rsh(new(big.Int).SetBytes(r.lo.AsSlice()), shift)
	hi := new(big.Int).Rsh(new(big.Int).SetBytes(r.hi.AsSlice()), shift)
	t := hi.Sub(hi, lo).Add(hi, big.NewInt(1))
	if !t.IsInt64() || t.Int64() > math.MaxInt {
		return math.MaxInt
	}
	return int(t.Int64())
}

// pick chooses at random among the first PickWindow free blocks.
func (r blockRange) pick(occ *occupied) (netip.Prefix, error) {
	if !r.valid() {
		return netip.Prefix{}, &OutOfSubnetsError{IPv6: r.ipv6}
	}
	var free []netip.Prefix
	a := netip.PrefixFrom(r.lo, r.bits).Masked().Addr()
	for len(free) < PickWindow && !r.hi.Less(a) {
		b := netip.PrefixFrom(a, r.bits)
		next, busy := occ.next(b)
		if !busy {
			free = append(free, b)
		}
		if a = next; !a.IsValid() {
			break // the end of the address space
		}
	}
	if len(free) == 0 {
		// Every block of the range was looked at and is taken.
		t := r.total()
		return netip.Prefix{}, &OutOfSubnetsError{IPv6: r.ipv6, Used: t, Total: t}
	}
	return free[rand.IntN(len(free))], nil
}

// free reports whether block b (of the range's length) overlaps no block in use.
func (occ *occupied) free(b netip.Prefix) bool {
	_, busy := occ.next(b)
	return !busy
}

// occupied is the blocks of one family in use, as seen by blocks of length
// bits: a prefix at least that long marks the block that holds it; a
// shorter ("wide") one covers many blocks and is checked by overlap.
type occupied struct {
	blocks map[netip.Prefix]bool
	wide   []netip.Prefix
}

func newOccupied(taken map[netip.Prefix]bool, ipv6 bool, bits int) *occupied {
	occ := &occupied{blocks: make(map[netip.Prefix]bool)}
	for p, in := range taken {
		if !in || !p.IsValid() || p.Addr().Is6() != ipv6 {
			continue
		}
		p = p.Masked()
		if p.Bits() >= bits {
			occ.blocks[netip.PrefixFrom(p.Addr(), bits).Masked()] = true
		} else {
			occ.wide = append(occ.wide, p)
		}
	}
	return occ
}

// next reports whether block b is in use and returns the first block after
// it that may be free: past the end of a wide prefix that covers b. The
// returned Addr is invalid at the end of the address space.
func (occ *occupied) next(b netip.Prefix) (netip.Addr, bool) {
	busy := occ.blocks[b]
	end := b
	for _, w := range occ.wide {
		if w.Overlaps(b) {
			busy = true
			if w.Bits() < end.Bits() {
				end = w
			}
		}
	}
	return afterPrefix(end), busy
}

// afterPrefix returns the first address after p, or the invalid Addr when p
// ends the address space.
func afterPrefix(p netip.Prefix) netip.Addr {
	return addBlocks(p.Masked().Addr(), p.Bits(), big.NewInt(1))
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func fromU32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// addBlocks returns base + n blocks of length bits, or the zero Addr when the
// result does not fit the address family.
func addBlocks(base netip.Addr, bits int, n *big.Int) netip.Addr {
	if !base.IsValid() || bits < 0 || bits > base.BitLen() {
		return netip.Addr{}
	}
	raw := base.AsSlice()
	v := new(big.Int).SetBytes(raw)
	v.Add(v, new(big.Int).Lsh(n, uint(base.BitLen()-bits)))
	if v.Sign() < 0 || v.BitLen() > base.BitLen() {
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(v.FillBytes(make([]byte, len(raw))))
	return a
}
