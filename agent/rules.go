package agent

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/weftnet/weft/backend/masq"
	"github.com/weftnet/weft/lease"
)

// The nftables side of the node: masquerade (--ip-masq), the FORWARD accepts
// (--iptables-forward-rules) and the diagnosis of firewalls that drop pod
// traffic where weft cannot help. Firewalls get reloaded and tables flushed
// under a running agent, so rulesLoop re-ensures everything every resync
// interval; the masq package makes a pass that finds everything in place
// cost one listing and log nothing.

// rules is what rulesLoop keeps in place.
type rules struct {
	devices   []string // the VXLAN devices
	raGuarded bool     // the router-advertisement drop for devices is in place
	masq      masq.Rules
	networks  []netip.Prefix // the cluster networks of the enabled families
	blockers  []masq.Blocker // as last logged
	errMsg    string         // last error logged
	errAt     time.Time
}

// guardRouterAdverts drops router advertisements and redirects arriving on
// the VXLAN device (masq.EnsureRADrop): anything that reaches the VXLAN port
// could otherwise give the node IPv6 addresses and routes through it, and
// accept_ra cannot be set where /proc/sys is read-only (the DaemonSet). A
// failure is logged, never fatal: the datapath then warns if the kernel
// would act on RAs.
func (a *Agent) guardRouterAdverts(devices []string) *rules {
	r := &rules{devices: devices}
	if err := a.masq.EnsureRADrop(devices); err != nil {
		a.log.Warn("cannot drop router advertisements on the vxlan devices", "devices", devices, "err", err)
		return r
	}
	r.raGuarded = true
	return r
}

// errorEvery bounds how often one unchanged error of the loop is logged again.
const errorEvery = 5 * time.Minute

// ensureRules is the start-up pass; its errors stop the agent.
func (a *Agent) ensureRules(r *rules, nw *lease.Network, l lease.Lease) error {
	r.masq = masq.Rules{VXLANPort: nw.Backend.Port}
	if nw.EnableIPv4 {
		r.masq.Network, r.masq.Subnet = nw.Network, l.Subnet
		r.networks = append(r.networks, nw.Network)
	}
	if nw.EnableIPv6 {
		r.masq.IPv6Network, r.masq.IPv6Subnet = nw.IPv6Network, l.IPv6Subnet
		r.networks = append(r.networks, nw.IPv6Network)
	}
	// A previous run with the flag set may have left rules behind.
	if !a.cfg.IPMasq {
		if err := a.masq.Delete(); err != nil {
			a.log.Warn("remove masquerade rules", "err", err)
		}
	}
	if !a.cfg.ForwardRules {
		if err := a.masq.DeleteForward(); err != nil {
			a.log.Warn("remove forward rules", "err", err)
		}
	}
	return a.ensureOnce(r)
}

// ensureOnce puts masquerade and forward rules in place and checks for
// blockers; it logs the blockers when they change.
func (a *Agent) ensureOnce(r *rules) error {
	// The masq package's errors name the step already.
	if a.cfg.IPMasq {
		if err := a.masq.Ensure(r.masq); err != nil {
			return err
		}
	}
	if a.cfg.ForwardRules {
		if err := a.masq.EnsureForward(r.networks); err != nil {
			return err
		}
	}
	if r.raGuarded {
		if err := a.masq.EnsureRADrop(r.devices); err != nil {
			return err
		}
	}
	var bs []masq.Blocker
	for _, n := range r.networks {
		b, err := a.masq.ForwardBlockers(n)
		if err != nil {
			// Only a diagnosis: the rules above are in place, so go on.
			a.log.Warn("could not check for firewalls dropping pod traffic", "network", n, "err", err)
			return nil
		}
		bs = append(bs, b...)
	}
	a.metrics.forwardBlockers.Set(float64(len(bs)))
	if slices.Equal(bs, r.blockers) {
		return nil
	}
	r.blockers = bs
	if len(bs) == 0 {
		a.ready.blocked.Store(nil)
		a.log.Info("no firewall chain drops forwarded pod traffic any more")
		return nil
	}
	names := make([]string, len(bs))
	for i, b := range bs {
		names[i] = b.String()
	}
	nets := make([]string, len(r.networks))
	for i, n := range r.networks {
		nets[i] = n.String()
	}
	reason := "forwarded pod traffic is dropped by " + strings.Join(names, "; ") +
		": weft cannot let it through there; accept " + strings.Join(nets, " and ") + " as source and as destination before that drop"
	a.ready.blocked.Store(&reason)
	a.log.Error("a firewall drops forwarded pod traffic", "chains", names, "networks", nets,
		"fix", "accept the pod network as source and as destination before that drop")
	return nil
}

// rulesLoop re-ensures the rules every resync interval until ctx ends. Its
// errors are logged (one unchanged error at most every errorEvery) and
// counted, never fatal: the rules in place keep working.
func (a *Agent) rulesLoop(ctx context.Context, r *rules) error {
	t := time.NewTicker(a.cfg.ResyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := a.ensureOnce(r)
		if err == nil {
			if r.errMsg != "" {
				a.log.Info("nftables rules in place again")
				r.errMsg = ""
			}
			continue
		}
		a.metrics.rulesErrors.Inc()
		if msg := err.Error(); msg != r.errMsg || time.Since(r.errAt) > errorEvery {
			a.log.Error("keep nftables rules in place (will retry)", "err", err, "in", a.cfg.ResyncInterval)
			r.errMsg, r.errAt = msg, time.Now()
		}
	}
}
