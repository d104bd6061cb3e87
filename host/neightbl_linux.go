package host

import (
	"encoding/binary"
	"fmt"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Attribute numbers of RTM_SETNEIGHTBL (linux/neighbour.h); x/sys/unix lacks them.
const (
	ndtaName       = 1 // NDTA_NAME
	ndtaParms      = 6 // NDTA_PARMS (nested)
	ndtpaIfindex   = 1 // NDTPA_IFINDEX
	ndtpaAppProbes = 9 // NDTPA_APP_PROBES, shown in /proc/sys as app_solicit
)

// ndtmsg is struct ndtmsg: family plus padding.
type ndtmsg struct{ family uint8 }

func (m ndtmsg) Len() int { return 4 }

func (m ndtmsg) Serialize() []byte { return []byte{m.family, 0, 0, 0} }

// neighTableName is the kernel's name of the neighbour table of family
// (tbl->id in net/ipv4/arp.c and net/ipv6/ndisc.c), which RTM_SETNEIGHTBL
// must name along with the family.
func neighTableName(family int) (string, error) {
	switch family {
	case unix.AF_INET:
		return "arp_cache", nil
	case unix.AF_INET6:
		return "ndisc_cache", nil
	}
	return "", fmt.Errorf("no neighbour table for address family %d: %w", family, unix.EAFNOSUPPORT)
}

// SetAppSolicit implements Host through rtnetlink (RTM_SETNEIGHTBL). Unlike
// a write to /proc/sys it needs only CAP_NET_ADMIN: a container that is not
// privileged gets /proc/sys mounted read-only.
func (n *NS) SetAppSolicit(family, ifindex, probes int) error {
	table, err := neighTableName(family)
	if err != nil {
		return fmt.Errorf("set app_solicit=%d on ifindex %d: %w", probes, ifindex, err)
	}
	// The request opens its socket in the namespace of the calling thread.
	err = n.Do(func() error {
		req := nl.NewNetlinkRequest(unix.RTM_SETNEIGHTBL, unix.NLM_F_ACK)
		req.AddData(ndtmsg{family: uint8(family)})
		req.AddData(nl.NewRtAttr(ndtaName, nl.ZeroTerminated(table)))
		parms := nl.NewRtAttr(ndtaParms, nil)
		parms.AddRtAttr(ndtpaIfindex, u32(uint32(ifindex)))
		parms.AddRtAttr(ndtpaAppProbes, u32(uint32(probes)))
		req.AddData(parms)
		_, err := req.Execute(unix.NETLINK_ROUTE, 0)
		return err
	})
	if err != nil {
		return fmt.Errorf("set app_solicit=%d on ifindex %d (%s): %w", probes, ifindex, table, err)
	}
	return nil
}

func u32(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}
