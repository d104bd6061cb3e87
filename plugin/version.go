package plugin

import "github.com/containernetworking/cni/pkg/version"

// Version is the build's version, set with -ldflags "-X github.com/weftnet/weft/plugin.Version=...".
var Version = "dev"

// SupportedVersions are the CNI spec versions weft speaks: VERSION lists
// them and skel refuses a config in any other (code 1). 0.1.0 and 0.2.0
// predate CHECK and interface results and are left out.
var SupportedVersions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// About is what the binary prints on stderr when run without CNI_COMMAND.
func About() string { return "CNI plugin weft " + Version }
