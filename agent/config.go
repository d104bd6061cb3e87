package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/backend/underlay"
	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/subnetenv"
)

// Version is stamped at build time (-ldflags -X).
var Version = "dev"

// Config is everything weftd run is told by flags or WEFT_* variables.
type Config struct {
	// Underlay selection (flannel's flags).
	Ifaces        []string
	IfaceRegex    []string
	IfaceCanReach string
	PublicIP      string
	PublicIPv6    string

	// NodeName is the stable node identity stored in the lease; it keeps the
	// subnet across a change of public IP. Only an explicitly set name is an
	// identity (several agents on one host, or cloned VMs, share a
	// hostname): empty means the public IP identifies the node, as in flannel.
	NodeName string
	// Hostname is the name earlier releases stored by default; a lease with
	// our public IP under it is recognised as ours. It is never written.
	Hostname string

	SubnetFile     string
	SubnetLeaseTTL time.Duration
	IPMasq         bool
	// ForwardRules accepts the Network in iptables' FORWARD chain
	// (flannel's --iptables-forward-rules), so a DROP policy (Docker sets
	// one) does not drop pod traffic.
	ForwardRules bool
	NeighMode    backend.Mode

	HealthzIP   string
	HealthzPort int // 0 disables the health server
	MetricsPort int // 0: /metrics is served on the health port only

	// CNIConfDir receives the conflist once subnet.env exists ("" = do not install).
	CNIConfDir string
	// CNIConfSource is the conflist to install ("" = the built-in default).
	CNIConfSource string

	// ResyncInterval is the datapath's periodic list-and-diff reconcile.
	ResyncInterval time.Duration
}

// UnderlayOptions are the flags that choose the underlay (underlay.Find).
func (c *Config) UnderlayOptions() underlay.Options {
	return underlay.Options{Ifaces: c.Ifaces, IfaceRegex: c.IfaceRegex, CanReach: c.IfaceCanReach, PublicIP: c.PublicIP, PublicIPv6: c.PublicIPv6}
}

// DefaultConfig returns flannel's defaults where flannel has the knob.
func DefaultConfig() Config {
	return Config{
		SubnetFile:     subnetenv.DefaultSubnetFile,
		SubnetLeaseTTL: lease.DefaultTTL,
		NeighMode:      backend.DefaultMode,
		ForwardRules:   true,
		HealthzIP:      "0.0.0.0",
		ResyncInterval: backend.DefaultResyncInterval,
	}
}

// Validate checks the config and explains each rejected value.
func (c *Config) Validate() error {
	var errs []error
	switch c.NeighMode {
	case backend.ModeProactive, backend.ModeOnDemand:
	case "":
		c.NeighMode = backend.DefaultMode
	default:
		errs = append(errs, fmt.Errorf("--neigh-mode %q: want %q or %q", c.NeighMode, backend.ModeProactive, backend.ModeOnDemand))
	}
	if c.SubnetFile == "" {
		errs = append(errs, errors.New("--subnet-file must not be empty"))
	}
	// etcd rejects TTLs below its minimum; a lease shorter than a few seconds
	// would expire between keepalives.
	if c.SubnetLeaseTTL < 5*time.Second {
		errs = append(errs, fmt.Errorf("--subnet-lease-ttl %s: must be at least 5s", c.SubnetLeaseTTL))
	}
	if c.PublicIP != "" {
		if a, err := netip.ParseAddr(c.PublicIP); err != nil || !a.Is4() {
			errs = append(errs, fmt.Errorf("--public-ip %q: not an IPv4 address", c.PublicIP))
		}
	}
	if c.PublicIPv6 != "" {
		if a, err := netip.ParseAddr(c.PublicIPv6); err != nil || !a.Is6() || a.Is4In6() {
			errs = append(errs, fmt.Errorf("--public-ipv6 %q: not an IPv6 address", c.PublicIPv6))
		}
	}
	if c.HealthzPort < 0 || c.HealthzPort > 65535 || c.MetricsPort < 0 || c.MetricsPort > 65535 {
		errs = append(errs, errors.New("--healthz-port and --metrics-port must be 0..65535"))
	}
	if c.HealthzIP != "" {
		if _, err := netip.ParseAddr(c.HealthzIP); err != nil {
			errs = append(errs, fmt.Errorf("--healthz-ip %q: %w", c.HealthzIP, err))
		}
	}
	if c.ResyncInterval <= 0 {
		c.ResyncInterval = backend.DefaultResyncInterval
	}
	return errors.Join(errs...)
}
