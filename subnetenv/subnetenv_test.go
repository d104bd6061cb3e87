package subnetenv

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestSubnetEnvRoundTripAndFormat(t *testing.T) {
	env := SubnetEnv{
		Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.1/24"),
		IPv6Network: netip.MustParsePrefix("fc00::/48"), IPv6Subnet: netip.MustParsePrefix("fc00:0:0:1::1/64"),
		MTU: 1450, IPMasq: true,
	}
	want := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	if got := string(env.Marshal()); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	back, err := ParseSubnetEnv(env.Marshal())
	if err != nil || !reflect.DeepEqual(back, env) {
		t.Errorf("round trip: %+v %v", back, err)
	}
}

func TestParseSubnetEnvListsAndComments(t *testing.T) {
	env, err := ParseSubnetEnv([]byte("# written by flanneld\nFLANNEL_NETWORK=10.244.0.0/16,10.245.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\nOTHER=x\n"))
	if err != nil || env.Network.String() != "10.244.0.0/16" || env.IPMasq {
		t.Errorf("%+v %v", env, err)
	}
}

func TestParseSubnetEnvReportsAllMissingKeys(t *testing.T) {
	_, err := ParseSubnetEnv([]byte("FLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\n"))
	var mk *MissingKeysError
	if !errors.As(err, &mk) || !errors.Is(err, ErrSubnetEnvIncomplete) {
		t.Fatalf("err = %v", err)
	}
	want := []string{"FLANNEL_NETWORK", "FLANNEL_MTU", "FLANNEL_IPMASQ", "FLANNEL_IPV6_SUBNET"} // flannel's line order
	if !reflect.DeepEqual(mk.Keys, want) {
		t.Errorf("missing %q, want %q", mk.Keys, want)
	}
	for _, bad := range []string{"FLANNEL_MTU=12\n", "FLANNEL_MTU=abc\n", "no equals sign\n", "FLANNEL_SUBNET=10.244.1.1\n"} {
		if _, err := ParseSubnetEnv([]byte(bad)); err == nil || errors.Is(err, ErrSubnetEnvIncomplete) {
			t.Errorf("%q: err %v, want a parse error", bad, err)
		}
	}
}

// An IPv6-only node writes only the IPv6 pair, as flannel does
// (EnableIPv4 false): it parses, and a file with neither pair names the IPv4
// pair missing.
func TestSubnetEnvIPv6Only(t *testing.T) {
	env := SubnetEnv{
		IPv6Network: netip.MustParsePrefix("fc00::/48"), IPv6Subnet: netip.MustParsePrefix("fc00:0:0:1::1/64"),
		MTU: 1430,
	}
	want := "FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
	if got := string(env.Marshal()); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	back, err := ParseSubnetEnv(env.Marshal())
	if err != nil || !reflect.DeepEqual(back, env) {
		t.Errorf("round trip: %+v %v", back, err)
	}
	_, err = ParseSubnetEnv([]byte("FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"))
	var mk *MissingKeysError
	if !errors.As(err, &mk) || !reflect.DeepEqual(mk.Keys, []string{"FLANNEL_NETWORK", "FLANNEL_SUBNET"}) {
		t.Errorf("neither family: %v", err)
	}
}

func TestWriteSubnetEnvAtomic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "flannel")
	path := filepath.Join(dir, "subnet.env")
	if _, err := ReadSubnetEnv(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	env := SubnetEnv{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.1/24"), MTU: 1450}
	old := syscallUmask(0o077) // a strict umask must not change the mode
	defer syscallUmask(old)
	for range 2 { // the second write replaces the first
		if err := WriteSubnetEnv(path, env); err != nil {
			t.Fatal(err)
		}
		env.MTU = 1400
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v %v", fi.Mode(), err)
	}
	di, err := os.Stat(dir)
	if err != nil || !di.IsDir() {
		t.Fatalf("dir: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
	got, err := ReadSubnetEnv(path)
	if err != nil || got.MTU != 1400 {
		t.Errorf("read back %+v %v", got, err)
	}
	// Unwritable target: error, and no temp file left.
	if err := WriteSubnetEnv(filepath.Join(path, "x"), env); err == nil {
		t.Error("write below a file: no error")
	}
}
