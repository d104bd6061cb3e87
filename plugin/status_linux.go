package plugin

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/plugin/ipam"
)

// CmdStatus answers whether an ADD could succeed now: subnet.env readable
// and complete, the IPAM directory writable. Otherwise code 50.
func CmdStatus(args *skel.CmdArgs) error {
	conf, err := LoadNetConf(args.StdinData)
	if err != nil {
		return err
	}
	if _, err := loadSubnetEnv(conf.SubnetFile); err != nil {
		return cniErr(types.ErrPluginNotAvailable, "not ready: %v", err)
	}
	if err := probeWritable(ipam.NetworkDir(conf.DataDir, conf.Name)); err != nil {
		return cniErr(types.ErrPluginNotAvailable, "not ready: IPAM directory is not writable: %v", err)
	}
	return nil
}

// probeWritable creates dir if needed and a file in it, then removes the file.
func probeWritable(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".status-probe-*")
	if err != nil {
		return err
	}
	_ = f.Close()
	return os.Remove(f.Name())
}

// CmdGC removes every reservation, and every weft veth on the bridge, whose
// (container ID, ifname) is not in cni.dev/valid-attachments (or the older
// cni.dev/attachments). It carries on past errors and reports them all.
func CmdGC(args *skel.CmdArgs) error {
	conf, err := LoadNetConf(args.StdinData)
	if err != nil {
		return err
	}
	log, closeLog := conf.logger()
	defer closeLog()
	keep := conf.validAttachments()
	valid := func(id, ifname string) bool {
		if ifname != "" {
			return keep[types.GCAttachment{ContainerID: id, IfName: ifname}]
		}
		for a := range keep { // old-layout file: any attachment of the container keeps it
			if a.ContainerID == id {
				return true
			}
		}
		return false
	}
	h, err := netlink.NewHandle(syscall.NETLINK_ROUTE)
	if err != nil {
		return internal(err, "netlink handle")
	}
	defer h.Close()
	errs := gcReservations(conf, h, valid, log)
	errs = append(errs, gcVeths(conf, h, valid, log)...)
	if len(errs) > 0 {
		return internal(errors.Join(errs...), "GC: %d errors", len(errs))
	}
	return nil
}

// gcReservations releases stale reservations and their veths.
func gcReservations(conf *NetConf, h *netlink.Handle, valid func(id, ifname string) bool, log *slogLogger) []error {
	if _, err := os.Stat(ipam.NetworkDir(conf.DataDir, conf.Name)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	store, err := ipam.OpenDiskStore(conf.DataDir, conf.Name)
	if err != nil {
		return []error{err}
	}
	defer store.Close()
	if err := store.Lock(); err != nil {
		return []error{err}
	}
	defer store.Unlock()
	rs, err := store.List()
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, r := range rs {
		if valid(r.ContainerID, r.IfName) {
			continue
		}
		if err := store.ReleaseByID(r.ContainerID, r.IfName); err != nil {
			errs = append(errs, err)
			continue
		}
		log.Info("GC released address", "ip", r.IP.String(), "container", r.ContainerID, "ifname", r.IfName)
		if r.IfName == "" {
			continue
		}
		name := hostVethName(r.ContainerID, r.IfName)
		l, err := h.LinkByName(name)
		if err == nil {
			err = h.LinkDel(l)
		}
		if err := ignoreNotFound(err); err != nil {
			errs = append(errs, fmt.Errorf("delete veth %s: %w", name, err))
		}
	}
	return errs
}

// gcVeths deletes veths on the bridge that carry weft's alias for an
// attachment that is no longer valid (a DEL that never came).
func gcVeths(conf *NetConf, h *netlink.Handle, valid func(id, ifname string) bool, log *slogLogger) []error {
	br, err := bridgeByName(h, conf.Bridge)
	if isLinkNotFound(err) {
		return nil
	}
	if err != nil {
		return []error{err}
	}
	links, err := h.LinkList()
	if err != nil {
		return []error{fmt.Errorf("list links: %w", err)}
	}
	var errs []error
	for _, l := range links {
		at := l.Attrs()
		rest, ours := strings.CutPrefix(at.Alias, aliasPrefix)
		i := strings.LastIndexByte(rest, '/')
		if !ours || at.MasterIndex != br.Index || l.Type() != "veth" || i < 0 || valid(rest[:i], rest[i+1:]) {
			continue
		}
		if err := ignoreNotFound(h.LinkDel(l)); err != nil {
			errs = append(errs, fmt.Errorf("delete veth %s: %w", at.Name, err))
			continue
		}
		log.Info("GC deleted veth", "veth", at.Name, "attachment", rest)
	}
	return errs
}
