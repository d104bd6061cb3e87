// Command weft is the CNI plugin: skel runs the CNI protocol, package plugin
// does the work.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/weftnet/weft/plugin"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    plugin.CmdAdd,
		Del:    plugin.CmdDel,
		Check:  plugin.CmdCheck,
		Status: plugin.CmdStatus,
		GC:     plugin.CmdGC,
	}, plugin.SupportedVersions, plugin.About())
}
