package subnetenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/weftnet/weft/atomicfile"
)

// DefaultSubnetFile is where the agent writes, and the CNI plugin reads, the node's subnet.
const DefaultSubnetFile = "/run/flannel/subnet.env"

// SubnetEnv is the content of subnet.env, flannel's contract between agent and CNI plugin.
type SubnetEnv struct {
	// Network is FLANNEL_NETWORK (first entry of a comma-separated list).
	Network netip.Prefix
	// Subnet is FLANNEL_SUBNET: the node's gateway address (.1) with the lease's length.
	Subnet netip.Prefix
	// IPv6Network and IPv6Subnet are the v6 counterparts (zero when disabled).
	IPv6Network netip.Prefix
	IPv6Subnet  netip.Prefix
	MTU         int
	IPMasq      bool
}

// ErrSubnetEnvIncomplete is matched (errors.Is) by the error ParseSubnetEnv returns
// when required keys are missing.
var ErrSubnetEnvIncomplete = errors.New("subnet.env incomplete")

// MissingKeysError lists every required key that is absent.
type MissingKeysError struct{ Keys []string }

func (e *MissingKeysError) Error() string {
	return "subnet.env is missing " + strings.Join(e.Keys, ", ")
}

// Is makes errors.Is(err, ErrSubnetEnvIncomplete) true.
func (e *MissingKeysError) Is(target error) bool { return target == ErrSubnetEnvIncomplete }

// ReadSubnetEnv reads and parses path. A missing file returns an error matching fs.ErrNotExist.
func ReadSubnetEnv(path string) (SubnetEnv, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return SubnetEnv{}, fmt.Errorf("read subnet file %q: %w", path, err)
	}
	env, err := ParseSubnetEnv(b)
	if err != nil {
		return SubnetEnv{}, fmt.Errorf("parse subnet file %q: %w", path, err)
	}
	return env, nil
}

// ParseSubnetEnv parses the KEY=VALUE lines of subnet.env. Unknown keys and
// blank or comment lines are ignored; values may be comma-separated lists (the
// first entry is used). Every missing required key is reported in one error.
func ParseSubnetEnv(b []byte) (SubnetEnv, error) {
	var env SubnetEnv
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return SubnetEnv{}, fmt.Errorf("line %q: want KEY=VALUE", line)
		}
		k, v = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(v), `"`)
		if first, _, _ := strings.Cut(v, ","); true {
			v = strings.TrimSpace(first)
		}
		if err := env.set(k, v); err != nil {
			return SubnetEnv{}, err
		}
		seen[k] = true
	}
	if err := sc.Err(); err != nil {
		return SubnetEnv{}, fmt.Errorf("scan: %w", err)
	}
	// Each family is a pair of lines; at least one pair must be there (an
	// IPv6-only node has no FLANNEL_NETWORK/FLANNEL_SUBNET, as flannel writes
	// it). A half pair is reported as the missing half.
	var missing []string
	v4 := seen["FLANNEL_NETWORK"] || seen["FLANNEL_SUBNET"]
	v6 := seen["FLANNEL_IPV6_NETWORK"] || seen["FLANNEL_IPV6_SUBNET"]
	want := []string{"FLANNEL_MTU", "FLANNEL_IPMASQ"}
	if v4 || !v6 {
		want = append([]string{"FLANNEL_NETWORK", "FLANNEL_SUBNET"}, want...)
	}
	if v6 {
		want = append(want, "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET")
	}
	for _, k := range want {
		if !seen[k] {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return SubnetEnv{}, &MissingKeysError{Keys: missing}
	}
	return env, nil
}

func (e *SubnetEnv) set(k, v string) error {
	var err error
	switch k {
	case "FLANNEL_NETWORK":
		e.Network, err = parsePrefixMasked(v)
	case "FLANNEL_SUBNET":
		e.Subnet, err = netip.ParsePrefix(v)
	case "FLANNEL_IPV6_NETWORK":
		e.IPv6Network, err = parsePrefixMasked(v)
	case "FLANNEL_IPV6_SUBNET":
		e.IPv6Subnet, err = netip.ParsePrefix(v)
	case "FLANNEL_MTU":
		e.MTU, err = strconv.Atoi(v)
		if err == nil && (e.MTU < 68 || e.MTU > 65535) {
			err = fmt.Errorf("out of range 68..65535")
		}
	case "FLANNEL_IPMASQ":
		e.IPMasq, err = strconv.ParseBool(v)
	default:
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s=%q: %w", k, v, err)
	}
	return nil
}

func parsePrefixMasked(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return p.Masked(), nil
}

// Marshal renders the file in flannel's line order: the IPv4 lines when
// Network is set, the IPv6 lines when IPv6Network is set (an IPv6-only node
// writes no FLANNEL_NETWORK, as flannel does).
func (e SubnetEnv) Marshal() []byte {
	var b bytes.Buffer
	if e.Network.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_NETWORK=%s\n", e.Network)
		fmt.Fprintf(&b, "FLANNEL_SUBNET=%s\n", e.Subnet)
	}
	if e.IPv6Network.IsValid() {
		fmt.Fprintf(&b, "FLANNEL_IPV6_NETWORK=%s\n", e.IPv6Network)
		fmt.Fprintf(&b, "FLANNEL_IPV6_SUBNET=%s\n", e.IPv6Subnet)
	}
	fmt.Fprintf(&b, "FLANNEL_MTU=%d\n", e.MTU)
	fmt.Fprintf(&b, "FLANNEL_IPMASQ=%t\n", e.IPMasq)
	return b.Bytes()
}

// WriteSubnetEnv writes e to path atomically: a temp file in the same
// directory (created 0755 if absent), fsync, chmod 0644, rename, fsync of the directory.
func WriteSubnetEnv(path string, e SubnetEnv) error {
	return atomicfile.Write(path, e.Marshal(), 0o644)
}
