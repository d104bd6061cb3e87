package lease

import (
	"math/big"
	"math/rand/v2"
	"net/netip"
)

// PickWindow is how many free blocks, counted from SubnetMin, PickFree chooses
// among at random. Random choice keeps concurrent acquirers from all racing
// for the same block; a window keeps the used range compact, like flannel.
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

// Block returns the i-th IPv4 block (0 is SubnetMin) and, when IPv6 is
// enabled, the IPv6 block with the same index (flannel pairs them that way).
// ok is false when i is out of range.
func (n *Network) Block(i int) (v4, v6 netip.Prefix, ok bool) {
	if i < 0 || i >= n.TotalBlocks() {
		return netip.Prefix{}, netip.Prefix{}, false
	}
	a := fromU32(u32(n.SubnetMin) + uint32(i)<<uint(32-n.SubnetLen))
	v4 = netip.PrefixFrom(a, n.SubnetLen)
	if n.EnableIPv6 {
		if a6 := addBlocks(n.IPv6SubnetMin, n.IPv6SubnetLen, big.NewInt(int64(i))); a6.IsValid() && !n.IPv6SubnetMax.Less(a6) {
			v6 = netip.PrefixFrom(a6, n.IPv6SubnetLen)
		}
	}
	return v4, v6, true
}

// Index returns the position of IPv4 block p (0 is SubnetMin), or -1 when p
// is not a block between SubnetMin and SubnetMax.
func (n *Network) Index(p netip.Prefix) int {
	if !n.Fits(p) {
		return -1
	}
	return int((u32(p.Addr()) - u32(n.SubnetMin)) >> uint(32-n.SubnetLen))
}

// Contains reports whether addr is inside the IPv4 or IPv6 cluster Network.
func (n *Network) Contains(addr netip.Addr) bool {
	return (n.Network.IsValid() && n.Network.Contains(addr)) ||
		(n.EnableIPv6 && n.IPv6Network.IsValid() && n.IPv6Network.Contains(addr))
}

// Fits reports whether p is an IPv4 block this config hands out: length
// SubnetLen, aligned, between SubnetMin and SubnetMax.
func (n *Network) Fits(p netip.Prefix) bool {
	return fits(p, n.SubnetLen, n.SubnetMin, n.SubnetMax) && p.Addr().Is4()
}

// FitsIPv6 is Fits for the IPv6 block of a dual-stack lease.
func (n *Network) FitsIPv6(p netip.Prefix) bool {
	return n.EnableIPv6 && fits(p, n.IPv6SubnetLen, n.IPv6SubnetMin, n.IPv6SubnetMax) && p.Addr().Is6()
}

// FitsLease reports whether a lease is usable under this config: its IPv4
// block fits and, when IPv6 is enabled, it has an IPv6 block that fits.
func (n *Network) FitsLease(l Lease) bool {
	if !n.Fits(l.Subnet) {
		return false
	}
	return !n.EnableIPv6 || n.FitsIPv6(l.IPv6Subnet)
}

func fits(p netip.Prefix, bits int, lo, hi netip.Addr) bool {
	return p.IsValid() && p.Bits() == bits && p.Masked() == p &&
		!p.Addr().Less(lo) && !hi.Less(p.Addr())
}

// PickFree chooses a free block at random among the first PickWindow free
// blocks from SubnetMin. taken holds the IPv4 blocks in use (blocks outside
// the range are ignored). With none free it returns an *OutOfSubnetsError.
func (n *Network) PickFree(taken map[netip.Prefix]bool) (v4, v6 netip.Prefix, err error) {
	total := n.TotalBlocks()
	used := 0
	for p := range taken {
		if taken[p] && n.Fits(p) {
			used++
		}
	}
	var free []int
	for i := 0; i < total && len(free) < PickWindow; i++ {
		if p, _, _ := n.Block(i); !taken[p] {
			free = append(free, i)
		}
	}
	if len(free) == 0 {
		return netip.Prefix{}, netip.Prefix{}, &OutOfSubnetsError{Used: used, Total: total}
	}
	v4, v6, _ = n.Block(free[rand.IntN(len(free))])
	return v4, v6, nil
}

// IPv6For returns the IPv6 block paired with IPv4 block p (same index), or
// the zero Prefix when IPv6 is off or p does not fit.
func (n *Network) IPv6For(p netip.Prefix) netip.Prefix {
	i := n.Index(p)
	if i < 0 {
		return netip.Prefix{}
	}
	_, v6, _ := n.Block(i)
	return v6
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
