package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// netConfJSON returns the config to write: the file as given, or JSON built
// from the flags (only the knobs set, so defaults stay the reader's).
func netConfJSON(file, network string, subnetLen, vni, port int, directRouting bool) ([]byte, error) {
	switch {
	case file != "" && network != "":
		return nil, errors.New("--file and --network are exclusive")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read network config: %w", err)
		}
		return b, nil
	case network == "":
		return nil, errors.New("give --network CIDR or --file net-conf.json")
	}
	type backendConf struct {
		Type          string
		VNI           int  `json:",omitempty"`
		Port          int  `json:",omitempty"`
		DirectRouting bool `json:",omitempty"`
	}
	conf := struct {
		Network   string
		SubnetLen int `json:",omitempty"`
		Backend   backendConf
	}{network, subnetLen, backendConf{"vxlan", vni, port, directRouting}}
	return json.Marshal(conf)
}
