package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/underlay"
	"github.com/weftnet/weft/lease"
)

// A plane is the overlay of one address family: its datapath and VXLAN
// device. flannel's model, which weft follows for wire compatibility: IPv4
// pods are carried by flannel.<VNI> over the node's IPv4 address, IPv6 pods
// by flannel-v6.<VNI> over its IPv6 address, both with the same VNI and
// port. A dual-stack node has both planes, an IPv6-only node only the IPv6
// one. (flannel has no IPv4 overlay over an IPv6 underlay, so neither does
// weft: a lease names one public address per family.)
type plane struct {
	v6  bool
	dp  Datapath
	dev backend.Device
}

func (p *plane) family() string {
	if p.v6 {
		return "IPv6"
	}
	return "IPv4"
}

// subnet is the plane's block of lease l (the zero Prefix when l has none).
func (p *plane) subnet(l lease.Lease) netip.Prefix {
	if p.v6 {
		return l.IPv6Subnet
	}
	return l.Subnet
}

// ErrNoUnderlayAddress is matched (errors.Is) by a *NoUnderlayAddressError.
var ErrNoUnderlayAddress = errors.New("underlay has no address of a family the network enables")

// NoUnderlayAddressError says the network config enables an address family
// that the chosen underlay interface has no usable address of. The agent
// refuses to start rather than run half the network.
type NoUnderlayAddressError struct {
	Family string // "IPv4" or "IPv6"
	Iface  string
	// Why is what underlay.Find said of the family's addresses, if anything.
	Why string
}

func (e *NoUnderlayAddressError) Error() string {
	flag := "--public-ip"
	cfg := "EnableIPv4"
	if e.Family == "IPv6" {
		flag, cfg = "--public-ipv6", "EnableIPv6"
	}
	msg := fmt.Sprintf("the network config enables %s (%s) but underlay interface %s has no usable %s address", e.Family, cfg, e.Iface, e.Family)
	if e.Why != "" {
		msg += " (" + e.Why + ")"
	}
	return msg + "; give the interface one, choose another with --iface, or set " + flag
}

func (e *NoUnderlayAddressError) Is(target error) bool { return target == ErrNoUnderlayAddress }

// checkUnderlay fails when a family nw enables has no address on ul.
func checkUnderlay(nw *lease.Network, ul underlay.Underlay) error {
	var errs []error
	if nw.EnableIPv4 && !ul.IP.IsValid() {
		errs = append(errs, &NoUnderlayAddressError{Family: "IPv4", Iface: ul.Name})
	}
	if nw.EnableIPv6 && !ul.IPv6.IsValid() {
		var skipped []string
		for _, s := range ul.SkippedIPv6 {
			skipped = append(skipped, s.String())
		}
		errs = append(errs, &NoUnderlayAddressError{Family: "IPv6", Iface: ul.Name, Why: strings.Join(skipped, "; ")})
	}
	return errors.Join(errs...)
}

// datapathConfig is the backend config of the plane of family v6.
func (a *Agent) datapathConfig(nw *lease.Network, ul underlay.Underlay, v6 bool, raGuarded bool) backend.Config {
	local, network := ul.IP, nw.Network
	if v6 {
		local, network = ul.IPv6, nw.IPv6Network
	}
	return backend.Config{
		Device: backend.DeviceConfig{
			VNI: nw.Backend.VNI, Port: nw.Backend.Port, LocalIP: local, UnderlayIndex: ul.Index,
			UnderlayMTU: ul.MTU, MTU: nw.Backend.MTU, GBP: nw.Backend.GBP, Learning: nw.Backend.Learning,
		},
		Mode:           a.cfg.NeighMode,
		Network:        network,
		DirectRouting:  nw.Backend.DirectRouting,
		ResyncInterval: a.cfg.ResyncInterval,
		Observer:       a.metrics.observer(v6),
		RAGuarded:      raGuarded,
	}
}

// deviceNames are the VXLAN devices of the families nw enables.
func deviceNames(nw *lease.Network) []string {
	var names []string
	if nw.EnableIPv4 {
		names = append(names, backend.DeviceName(nw.Backend.VNI))
	}
	if nw.EnableIPv6 {
		names = append(names, backend.DeviceNameV6(nw.Backend.VNI))
	}
	return names
}

// makePlanes builds and ensures the datapath of every family nw enables.
func (a *Agent) makePlanes(nw *lease.Network, ul underlay.Underlay, raGuarded bool) ([]*plane, error) {
	var planes []*plane
	for _, v6 := range []bool{false, true} {
		if (!v6 && !nw.EnableIPv4) || (v6 && !nw.EnableIPv6) {
			continue
		}
		p := &plane{v6: v6}
		dp, err := a.newDatapath(a.datapathConfig(nw, ul, v6, raGuarded))
		if err != nil {
			return nil, fmt.Errorf("create %s vxlan backend: %w", p.family(), err)
		}
		p.dp = dp
		if p.dev, err = dp.EnsureDevice(); err != nil {
			return nil, fmt.Errorf("ensure %s vxlan device: %w", p.family(), err)
		}
		planes = append(planes, p)
	}
	return planes, nil
}

// minMTU is the pods' MTU: the smallest device MTU, so that a pod's packets
// of either family fit their device (the IPv6 device's is 20 bytes smaller
// over an IPv6 underlay).
func minMTU(planes []*plane) int {
	m := 0
	for _, p := range planes {
		if m == 0 || p.dev.MTU < m {
			m = p.dev.MTU
		}
	}
	return m
}
