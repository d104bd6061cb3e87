package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// netConfJSON returns the config to write: the file as given, or JSON built
// from the flags (only the knobs set, so defaults stay the reader's). An
// --ipv6-network makes it dual stack, or IPv6-only without --network.
func netConfJSON(file, network, network6 string, subnetLen, vni, port int, directRouting bool) ([]byte, error) {
	switch {
	case file != "" && (network != "" || network6 != ""):
		return nil, errors.New("--file and --network/--ipv6-network are exclusive")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read network config: %w", err)
		}
		return b, nil
	case network == "" && network6 == "":
		return nil, errors.New("give --network CIDR (and/or --ipv6-network CIDR) or --file net-conf.json")
	}
	type backendConf struct {
		Type          string
		VNI           int  `json:",omitempty"`
		Port          int  `json:",omitempty"`
		DirectRouting bool `json:",omitempty"`
	}
	conf := struct {
		Network     string `json:",omitempty"`
		SubnetLen   int    `json:",omitempty"`
		EnableIPv4  *bool  `json:",omitempty"`
		EnableIPv6  bool   `json:",omitempty"`
		IPv6Network string `json:",omitempty"`
		Backend     backendConf
	}{Network: network, SubnetLen: subnetLen, IPv6Network: network6, EnableIPv6: network6 != "",
		Backend: backendConf{"vxlan", vni, port, directRouting}}
	if network == "" {
		off := false
		conf.EnableIPv4 = &off // IPv6-only: flannel's EnableIPv4 defaults to true
	}
	return json.Marshal(conf)
}
