package plugin

import (
	"errors"
	"io/fs"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/host"
	"github.com/weftnet/weft/plugin/ipam"
)

// CmdDel detaches a pod. It is idempotent and needs neither the pod netns
// (CNI_NETNS may be empty or gone) nor subnet.env: the node-side veth name
// derives from (container ID, ifname) and deleting it removes the pod side
// too (a veth pair dies as one), and the address is released by container ID
// and ifname. Missing things are not errors.
func CmdDel(args *skel.CmdArgs) error {
	conf, err := LoadNetConf(args.StdinData)
	if err != nil {
		return err
	}
	log, closeLog := conf.logger()
	defer closeLog()
	var errs []error
	if err := deleteHostVeth(hostVethName(args.ContainerID, args.IfName)); err != nil {
		errs = append(errs, err)
	}
	if err := release(conf, args.ContainerID, args.IfName); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		log.Error("DEL failed", "container", args.ContainerID, "ifname", args.IfName, "err", err)
		return internal(err, "DEL %s/%s", args.ContainerID, args.IfName)
	}
	log.Info("DEL", "container", args.ContainerID, "ifname", args.IfName)
	return nil
}

// deleteHostVeth removes the node-side veth if it exists, in one request
// addressed by name.
func deleteHostVeth(name string) error {
	node, err := host.Open("")
	if err != nil {
		return internal(err, "netlink connection")
	}
	defer node.Close()
	if err := ignoreNotFound(node.DelLinkByName(name)); err != nil {
		return internal(err, "delete veth %s", name)
	}
	return nil
}

// release frees the attachment's addresses, all families; no IPAM directory
// means none.
func release(conf *NetConf, id, ifname string) error {
	if _, err := os.Stat(ipam.NetworkDir(conf.DataDir, conf.Name)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	store, err := openStore(conf)
	if err != nil {
		return err
	}
	defer store.Close()
	// The range does not matter: Release frees the attachment's addresses
	// of every family.
	if err := ipam.NewAllocator(store, ipam.Range{}, 0).Release(id, ifname); err != nil {
		return cniErr(types.ErrIOFailure, "release address of %s/%s: %v", id, ifname, err)
	}
	return nil
}
