package plugin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/subnetenv"
	"github.com/weftnet/weft/test/nettest"
)

// The tests drive the real binaries the way containerd does: libcni, the
// conflist from manifests/, weft and portmap built into a temporary CNI_PATH.
// Every test has its own "node" netns and the CNI calls run inside it, so
// cni0 and the node-side veths live there and never in the root netns.

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// cniPath builds weft and portmap once per test binary.
func cniPath(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "weft-cni-bin-"); buildErr != nil {
			return
		}
		for name, pkg := range map[string]string{
			"weft":    "github.com/weftnet/weft/cmd/weft",
			"portmap": "github.com/containernetworking/plugins/plugins/meta/portmap",
		} {
			cmd := osexec.Command("go", "build", "-trimpath", "-o", filepath.Join(binDir, name), pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as `make build` does
			out, err := cmd.CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v: %s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

const (
	testNetwork = "10.244.0.0/16"
	testMTU     = 1450
)

// node is one test node: a netns, its subnet.env and IPAM dir, a libcni
// runtime with its own cache dir.
type node struct {
	ns         *nettest.NS
	h          *netlink.Handle
	subnetFile string
	dataDir    string
	cni        *libcni.CNIConfig
}

// newNode makes the node netns and writes subnet.env for subnet (the .1/len form).
func newNode(t *testing.T, subnet string) *node {
	t.Helper()
	path := cniPath(t)
	dir := t.TempDir()
	n := &node{
		ns:         nettest.NewNS(t, "cn"),
		subnetFile: filepath.Join(dir, "run", "subnet.env"),
		dataDir:    filepath.Join(dir, "networks"),
		cni:        libcni.NewCNIConfigWithCacheDir([]string{path}, filepath.Join(dir, "cache"), nil),
	}
	n.h = nettest.Handle(t, n.ns.NetNS)
	if subnet != "" {
		n.writeSubnetEnv(t, subnet)
	}
	return n
}

func (n *node) writeSubnetEnv(t *testing.T, subnet string) {
	t.Helper()
	env := subnetenv.SubnetEnv{
		Network: netip.MustParsePrefix(testNetwork),
		Subnet:  netip.MustParsePrefix(subnet),
		MTU:     testMTU,
		IPMasq:  true,
	}
	if err := subnetenv.WriteSubnetEnv(n.subnetFile, env); err != nil {
		t.Fatal(err)
	}
}

// conflist loads manifests/10-weft.conflist verbatim, points the weft plugin
// at this node's files, and for ver != "" pins cniVersion (dropping
// cniVersions). edit may change the weft plugin object further.
func (n *node) conflist(t testing.TB, ver string, edit func(weft map[string]any)) *libcni.NetworkConfigList {
	t.Helper()
	raw, err := os.ReadFile("../manifests/10-weft.conflist")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if ver != "" {
		m["cniVersion"] = ver
		delete(m, "cniVersions")
	}
	weft := m["plugins"].([]any)[0].(map[string]any)
	weft["subnetFile"] = n.subnetFile
	weft["dataDir"] = n.dataDir
	if edit != nil {
		edit(weft)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// in runs fn with the calling thread in the node netns: libcni forks the
// plugin from this thread, so the plugin runs in the node netns.
func (n *node) in(fn func() error) error {
	return n.ns.Do(func(ns.NetNS) error { return fn() })
}

func rtFor(id string, pod *nettest.NS) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: id, IfName: "eth0"}
	if pod != nil {
		rt.NetNS = pod.Path
	}
	return rt
}

func (n *node) add(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (res types.Result, err error) {
	err = n.in(func() error {
		res, err = n.cni.AddNetworkList(context.Background(), list, rt)
		return err
	})
	return res, err
}

func (n *node) del(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return n.in(func() error { return n.cni.DelNetworkList(context.Background(), list, rt) })
}

func (n *node) check(list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	return n.in(func() error { return n.cni.CheckNetworkList(context.Background(), list, rt) })
}

// execRaw runs the weft binary with raw stdin, as libcni's invoke does, for
// inputs libcni itself would refuse to parse.
func (n *node) execRaw(t testing.TB, cmd string, stdin []byte, rt *libcni.RuntimeConf) (types.Result, error) {
	var res types.Result
	err := n.in(func() error {
		args := &invoke.Args{Command: cmd, ContainerID: rt.ContainerID, NetNS: rt.NetNS, IfName: rt.IfName, Path: cniPath(t)}
		var err error
		res, err = invoke.ExecPluginWithResult(context.Background(), filepath.Join(cniPath(t), "weft"), stdin, args, nil)
		return err
	})
	return res, err
}

// ipFiles lists the reservation files of network cbr0.
// lastReserved is the allocator's cursor file ("" when absent).
func (n *node) lastReserved() string {
	b, _ := os.ReadFile(filepath.Join(n.dataDir, "cbr0", "last_reserved_ip.0"))
	return string(b)
}

func (n *node) ipFiles(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(n.dataDir, "cbr0"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// veths lists the veth links in the node netns.
func (n *node) veths(t testing.TB) []string {
	t.Helper()
	links, err := n.h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if l.Type() == "veth" {
			out = append(out, l.Attrs().Name)
		}
	}
	slices.Sort(out)
	return out
}

// cniCode returns the code of a CNI error, or fails the test.
func cniCode(t testing.TB, err error) (uint, string) {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *types.Error", err, err)
	}
	return e.Code, e.Msg
}

func wantCode(t testing.TB, err error, code uint, msgPart string) {
	t.Helper()
	if err == nil {
		t.Fatalf("succeeded, want error code %d (%q)", code, msgPart)
	}
	got, msg := cniCode(t, err)
	if got != code || !strings.Contains(msg, msgPart) {
		t.Fatalf("error code %d %q, want code %d containing %q", got, msg, code, msgPart)
	}
}

// ping runs one ping from pod to dst.
func ping(t *testing.T, pod *nettest.NS, dst string) {
	t.Helper()
	if out, err := pod.Exec(t, "ping", "-c", "1", "-W", "2", dst); err != nil {
		t.Fatalf("ping %s from %s: %v\n%s", dst, pod.Name, err, out)
	}
}

// exec runs a command in the caller's netns.
func exec(name string, args ...string) (string, error) {
	out, err := osexec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
