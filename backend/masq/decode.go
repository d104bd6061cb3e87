package masq

import (
	"bytes"
	"fmt"
	"math/bits"
	"net/netip"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// decoder turns the expressions of one rule, as listed by the kernel, back into a
// ruleSpec. It accepts only the shapes encode writes; anything else is ErrDrift.
type decoder struct {
	ex  []expr.Any
	i   int
	is6 bool
}

// decode parses one rule's expressions.
func decode(ex []expr.Any, is6 bool) (ruleSpec, error) {
	d := &decoder{ex: ex, is6: is6}
	var s ruleSpec
	for d.i < len(d.ex) {
		if s.Action != 0 {
			return s, fmt.Errorf("%w: expression %d (%T) after the verdict", ErrDrift, d.i, d.ex[d.i])
		}
		var err error
		switch e := d.ex[d.i].(type) {
		case *expr.Meta:
			err = d.meta(e, &s)
		case *expr.Payload:
			err = d.addr(e, &s)
		case *expr.Counter:
			d.i++
		case *expr.Verdict:
			if e.Kind != expr.VerdictReturn {
				err = fmt.Errorf("%w: verdict %v, want return", ErrDrift, e.Kind)
			}
			s.Action = actReturn
			d.i++
		case *expr.Masq:
			if !e.FullyRandom || e.Random || e.Persistent || e.ToPorts {
				err = fmt.Errorf("%w: masquerade %+v, want fully-random only", ErrDrift, *e)
			}
			s.Action = actMasquerade
			d.i++
		default:
			err = fmt.Errorf("%w: unexpected expression %T", ErrDrift, e)
		}
		if err != nil {
			return s, err
		}
	}
	if s.Action == 0 {
		return s, fmt.Errorf("%w: rule has no verdict", ErrDrift)
	}
	return s, nil
}

// peek returns the current expression, or nil at the end.
func (d *decoder) peek() expr.Any {
	if d.i >= len(d.ex) {
		return nil
	}
	return d.ex[d.i]
}

// cmp consumes the current expression, which must be a compare on register 1 with
// one of ops.
func (d *decoder) cmp(ops ...expr.CmpOp) (*expr.Cmp, error) {
	c, ok := d.peek().(*expr.Cmp)
	if !ok || c.Register != 1 {
		return nil, fmt.Errorf("%w: expression %d is not a compare on register 1", ErrDrift, d.i)
	}
	for _, op := range ops {
		if c.Op == op {
			d.i++
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w: compare op %v at expression %d", ErrDrift, c.Op, d.i)
}

// meta parses "meta mark & 0x4000 == 0x4000" or "meta l4proto udp udp dport N".
func (d *decoder) meta(m *expr.Meta, s *ruleSpec) error {
	switch {
	case m.Key == expr.MetaKeyMARK && !s.Mark:
		d.i++
		mark := binaryutil.NativeEndian.PutUint32(kubeProxyMark)
		b, ok := d.peek().(*expr.Bitwise)
		if !ok || b.Len != 4 || !bytes.Equal(b.Mask, mark) || !bytes.Equal(b.Xor, make([]byte, 4)) {
			return fmt.Errorf("%w: mark match is not & 0x%x", ErrDrift, kubeProxyMark)
		}
		d.i++
		c, err := d.cmp(expr.CmpOpEq)
		if err != nil {
			return err
		}
		if !bytes.Equal(c.Data, mark) {
			return fmt.Errorf("%w: mark compared with %x", ErrDrift, c.Data)
		}
		s.Mark = true
		return nil
	case m.Key == expr.MetaKeyL4PROTO && s.UDPDport == 0:
		d.i++
		c, err := d.cmp(expr.CmpOpEq)
		if err != nil {
			return err
		}
		if !bytes.Equal(c.Data, []byte{unix.IPPROTO_UDP}) {
			return fmt.Errorf("%w: l4proto %v, want udp", ErrDrift, c.Data)
		}
		p, ok := d.peek().(*expr.Payload)
		if !ok || p.Base != expr.PayloadBaseTransportHeader || p.Offset != 2 || p.Len != 2 {
			return fmt.Errorf("%w: udp match without a destination port", ErrDrift)
		}
		d.i++
		if c, err = d.cmp(expr.CmpOpEq); err != nil {
			return err
		}
		if len(c.Data) != 2 || binaryutil.BigEndian.Uint16(c.Data) == 0 {
			return fmt.Errorf("%w: udp dport %x", ErrDrift, c.Data)
		}
		s.UDPDport = binaryutil.BigEndian.Uint16(c.Data)
		return nil
	}
	return fmt.Errorf("%w: unexpected or repeated meta %v", ErrDrift, m.Key)
}

// addr parses "ip saddr|daddr [!=] prefix".
func (d *decoder) addr(p *expr.Payload, s *ruleSpec) error {
	so, do, size := addrOffsets(d.is6)
	var dst *addrMatch
	switch {
	case p.Base == expr.PayloadBaseNetworkHeader && p.Offset == so && p.Len == size && !s.Saddr.Prefix.IsValid():
		dst = &s.Saddr
	case p.Base == expr.PayloadBaseNetworkHeader && p.Offset == do && p.Len == size && !s.Daddr.Prefix.IsValid():
		dst = &s.Daddr
	default:
		return fmt.Errorf("%w: unexpected or repeated payload load base %v offset %d len %d", ErrDrift, p.Base, p.Offset, p.Len)
	}
	d.i++
	ones := int(size) * 8 // no mask: a host address
	if b, ok := d.peek().(*expr.Bitwise); ok {
		var err error
		if ones, err = maskBits(b, size); err != nil {
			return err
		}
		d.i++
	}
	c, err := d.cmp(expr.CmpOpEq, expr.CmpOpNeq)
	if err != nil {
		return err
	}
	a, ok := netip.AddrFromSlice(c.Data)
	if !ok || len(c.Data) != int(size) {
		return fmt.Errorf("%w: address %x of %d bytes", ErrDrift, c.Data, size)
	}
	pfx := netip.PrefixFrom(a, ones)
	if pfx.Masked() != pfx {
		return fmt.Errorf("%w: address %v has host bits", ErrDrift, pfx)
	}
	*dst = addrMatch{Prefix: pfx, Not: c.Op == expr.CmpOpNeq}
	return nil
}

// maskBits returns the prefix length of a contiguous network mask.
func maskBits(b *expr.Bitwise, size uint32) (int, error) {
	if b.Len != size || len(b.Mask) != int(size) || !bytes.Equal(b.Xor, make([]byte, size)) {
		return 0, fmt.Errorf("%w: address mask of wrong size", ErrDrift)
	}
	ones := 0
	for _, m := range b.Mask {
		ones += bits.OnesCount8(m)
	}
	if !bytes.Equal(b.Mask, netipMask(ones, int(size))) {
		return 0, fmt.Errorf("%w: address mask %x is not contiguous", ErrDrift, b.Mask)
	}
	return ones, nil
}
