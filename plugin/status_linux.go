package plugin

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/host"
	"github.com/weftnet/weft/plugin/ipam"
	"github.com/weftnet/weft/subnetenv"
)

// CmdStatus answers whether an ADD could succeed now: subnet.env readable,
// complete (either family or both) and agreeing with the config (ipam.ranges
// families, the MTU IPv6 needs), the agent running, the IPAM directory
// writable. Otherwise code 50.
func CmdStatus(args *skel.CmdArgs) error {
	conf, err := LoadNetConf(args.StdinData)
	if err != nil {
		return err
	}
	env, err := loadSubnetEnv(conf.SubnetFile)
	if err != nil {
		return cniErr(types.ErrPluginNotAvailable, "not ready: %v", err)
	}
	if _, err := conf.makePlan(env); err != nil {
		return cniErr(types.ErrPluginNotAvailable, "not ready: %v", err)
	}
	if err := agentRunning(conf.SubnetFile); err != nil {
		return cniErr(types.ErrPluginNotAvailable, "not ready: %v", err)
	}
	if err := probeWritable(ipam.NetworkDir(conf.DataDir, conf.Name)); err != nil {
		return cniErr(types.ErrPluginNotAvailable, "not ready: IPAM directory is not writable: %v", err)
	}
	return nil
}

// agentRunning checks that the agent that wrote subnetFile still runs: it
// holds an exclusive flock on subnetenv.AgentLockFile while it does. No lock file
// means an agent that predates it (subnet.env alone decides, as before). A
// stopped agent leaves subnet.env and the datapath in place, so pods keep
// talking, but new peers go unprogrammed: the node should not take new pods.
func agentRunning(subnetFile string) error {
	path := subnetenv.AgentLockFile(subnetFile)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("agent lock: %w", err)
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	switch {
	case errors.Is(err, syscall.EWOULDBLOCK):
		return nil // held: the agent runs
	case err != nil:
		return fmt.Errorf("agent lock %s: %w", path, err)
	}
	return fmt.Errorf("weftd is not running (nothing holds %s): is the weft DaemonSet pod running on this node?", path)
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

// CmdGC removes the attachments of this network (the config's name) whose
// (container ID, ifname) is not in cni.dev/valid-attachments (or the older
// cni.dev/attachments): their reservations in the network's IPAM directory
// and their veths. GC is per network: another network's pods on the same
// bridge are never touched (doc.go, "Veth tags"). It carries on past errors
// and reports them all.
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
	h, err := host.Open("")
	if err != nil {
		return internal(err, "netlink connection")
	}
	defer h.Close()
	errs := gcReservations(conf, h, valid, log)
	errs = append(errs, gcVeths(conf, h, valid, log)...)
	if len(errs) > 0 {
		return internal(errors.Join(errs...), "GC of network %s: %d errors", conf.Name, len(errs))
	}
	return nil
}

// gcReservations releases the network's stale reservations and deletes the
// veth named after each, unless its tag says it is another network's (see
// reservedVethIsOurs). This is the only way GC deletes a veth with a legacy
// (unscoped) tag or none: the reservation in this network's directory proves
// whose it is.
func gcReservations(conf *NetConf, h *host.NS, valid func(id, ifname string) bool, log *slogLogger) []error {
	if _, err := os.Stat(ipam.NetworkDir(conf.DataDir, conf.Name)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	store, err := ipam.OpenDiskStore(conf.DataDir, conf.Name)
	if err != nil {
		return []error{fmt.Errorf("open IPAM store of network %s: %w", conf.Name, err)}
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
	// An attachment has a reservation per family; ReleaseByID frees them
	// all at its first, and its veth is looked at once.
	done := map[[2]string]bool{}
	for _, r := range rs {
		if valid(r.ContainerID, r.IfName) {
			continue
		}
		pair := [2]string{r.ContainerID, r.IfName}
		if done[pair] {
			log.Info("GC released address", "ip", r.IP.String(), "container", r.ContainerID, "ifname", r.IfName)
			continue
		}
		done[pair] = true
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
		if err != nil {
			if err := ignoreNotFound(err); err != nil {
				errs = append(errs, fmt.Errorf("look up veth %s: %w", name, err))
			}
			continue
		}
		if l.Type() != "veth" || !reservedVethIsOurs(l.Attrs().Alias, conf.Name, r.ContainerID, r.IfName) {
			log.Info("GC kept a link named like a released attachment's veth: not this network's", "link", name, "type", l.Type(), "alias", l.Attrs().Alias)
			continue
		}
		if err := ignoreNotFound(h.LinkDel(l)); err != nil {
			errs = append(errs, fmt.Errorf("delete veth %s: %w", name, err))
			continue
		}
		log.Info("GC deleted veth", "veth", name, "container", r.ContainerID, "ifname", r.IfName)
	}
	return errs
}

// gcVeths deletes veths on the bridge tagged with this network's name for an
// attachment that is no longer valid (a DEL that never came, its reservation
// gone). Veths tagged for another network are theirs; veths with a legacy
// tag are left alone here, since nothing but a reservation
// (gcReservations) proves which network they belong to.
func gcVeths(conf *NetConf, h *host.NS, valid func(id, ifname string) bool, log *slogLogger) []error {
	br, err := bridgeByName(h, conf.Bridge)
	if isLinkNotFound(err) {
		return nil
	}
	if err != nil {
		return []error{err}
	}
	links, err := h.LinkList()
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, l := range links {
		at := l.Attrs()
		if at.MasterIndex != br.Index || l.Type() != "veth" {
			continue
		}
		tag, ok := parseVethAlias(at.Alias)
		if !ok || tag.network != conf.Name || valid(tag.containerID, tag.ifname) {
			continue
		}
		if err := ignoreNotFound(h.LinkDel(l)); err != nil {
			errs = append(errs, fmt.Errorf("delete veth %s: %w", at.Name, err))
			continue
		}
		log.Info("GC deleted veth", "veth", at.Name, "container", tag.containerID, "ifname", tag.ifname)
	}
	return errs
}
