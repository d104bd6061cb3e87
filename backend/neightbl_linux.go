package backend

import (
	"encoding/binary"
	"fmt"

	"github.com/containernetworking/plugins/pkg/ns"
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

// setAppSolicit sets app_solicit of one device's IPv4 neighbour table through
// rtnetlink. Unlike a write to /proc/sys it needs only CAP_NET_ADMIN: a
// container that is not privileged gets /proc/sys mounted read-only.
func (v *kernel) setAppSolicit(ifindex, probes int) error {
	send := func() error {
		req := nl.NewNetlinkRequest(unix.RTM_SETNEIGHTBL, unix.NLM_F_ACK)
		req.AddData(ndtmsg{family: unix.AF_INET})
		req.AddData(nl.NewRtAttr(ndtaName, nl.ZeroTerminated("arp_cache")))
		parms := nl.NewRtAttr(ndtaParms, nil)
		parms.AddRtAttr(ndtpaIfindex, u32(uint32(ifindex)))
		parms.AddRtAttr(ndtpaAppProbes, u32(uint32(probes)))
		req.AddData(parms)
		_, err := req.Execute(unix.NETLINK_ROUTE, 0)
		return err
	}
	var err error
	if v.cfg.NetNSPath == "" {
		err = send()
	} else {
		// The request's socket is opened in the namespace of the calling thread.
		err = ns.WithNetNSPath(v.cfg.NetNSPath, func(ns.NetNS) error { return send() })
	}
	if err != nil {
		return fmt.Errorf("set app_solicit=%d on ifindex %d: %w", probes, ifindex, err)
	}
	return nil
}

func u32(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}
