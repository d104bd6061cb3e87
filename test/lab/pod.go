package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
)

// modulePath identifies the weft checkout when looking for manifests/.
const modulePath = "module github.com/weftnet/weft"

// portmapPkg is built into the CNI path when Options.CNIPath is empty.
const portmapPkg = "github.com/containernetworking/plugins/plugins/meta/portmap"

// cniEnv is what every CNI call needs: the plugin directory, the conflist
// as shipped, a cache dir and an exec whose stderr goes to a log file.
type cniEnv struct {
	path     string
	conflist []byte
	cacheDir string
	logPath  string
}

func newCNIEnv(ctx context.Context, o Options, dir string) (*cniEnv, error) {
	repo := o.RepoDir
	if repo == "" {
		var err error
		if repo, err = findRepoDir(); err != nil {
			return nil, err
		}
	}
	conflist, err := os.ReadFile(filepath.Join(repo, "manifests", "10-weft.conflist"))
	if err != nil {
		return nil, fmt.Errorf("read conflist: %w", err)
	}
	env := &cniEnv{path: o.CNIPath, conflist: conflist, cacheDir: filepath.Join(dir, "cni-cache"), logPath: filepath.Join(dir, "cni.log")}
	if env.path == "" {
		env.path = filepath.Join(dir, "cni-bin")
		if err := buildCNIPath(ctx, repo, o.BinDir, env.path); err != nil {
			return nil, err
		}
	}
	for _, b := range []string{"weft", "portmap"} {
		if _, err := os.Stat(filepath.Join(env.path, b)); err != nil {
			return nil, fmt.Errorf("CNI path %s: %w", env.path, err)
		}
	}
	return env, nil
}

// buildCNIPath links the built weft and builds portmap into dst.
func buildCNIPath(ctx context.Context, repo, binDir, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("CNI path: %w", err)
	}
	if err := os.Symlink(filepath.Join(binDir, "weft"), filepath.Join(dst, "weft")); err != nil {
		return fmt.Errorf("CNI path: %w", err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dst, "portmap"), portmapPkg)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build portmap: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// findRepoDir walks up from the working directory to the weft go.mod.
func findRepoDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find weft checkout: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte(modulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find weft checkout: no go.mod of github.com/weftnet/weft above the working directory (set Options.RepoDir)")
		}
		dir = parent
	}
}

// confList is the shipped conflist with the node's subnetFile and dataDir
// injected into the weft plugin object (nodes share one filesystem).
func (e *cniEnv) confList(n *Node) (*libcni.NetworkConfigList, error) {
	var raw map[string]any
	if err := json.Unmarshal(e.conflist, &raw); err != nil {
		return nil, fmt.Errorf("parse conflist: %w", err)
	}
	plugins, _ := raw["plugins"].([]any)
	found := false
	for _, p := range plugins {
		if m, ok := p.(map[string]any); ok && m["type"] == "weft" {
			m["subnetFile"] = n.SubnetFile()
			m["dataDir"] = filepath.Join(n.Dir, "ipam")
			found = true
		}
	}
	if !found {
		return nil, errors.New("conflist has no plugin of type weft")
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("encode conflist: %w", err)
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("load conflist: %w", err)
	}
	return list, nil
}

// Pod is a pod namespace attached by the weft plugin.
type Pod struct {
	Name        string
	Node        *Node
	NS          *NetNS     // <prefix>-<node>-<Name>
	IP          netip.Addr // IPv4 eth0 address from the CNI result (zero in an IPv6-only lab)
	IP6         netip.Addr // IPv6 eth0 address from the CNI result (zero unless the overlay has IPv6)
	ContainerID string
}

// Addr is the pod's address of the single family f.
func (p *Pod) Addr(f Family) netip.Addr { return pick(f, p.IP, p.IP6) }

// call runs one CNI verb from inside the node's namespace: the plugin
// binaries are forked from the thread ns.Do locked into it, so cni0 and the
// host veth end land in the node, as they would with containerd on a node.
func (e *cniEnv) call(ctx context.Context, p *Pod, fn func(*libcni.CNIConfig, *libcni.NetworkConfigList, *libcni.RuntimeConf) error) error {
	list, err := e.confList(p.Node)
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(e.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("CNI log: %w", err)
	}
	defer logf.Close()
	ex := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: logf}}
	cni := libcni.NewCNIConfigWithCacheDir([]string{e.path}, e.cacheDir, ex)
	rt := &libcni.RuntimeConf{
		ContainerID: p.ContainerID,
		NetNS:       p.NS.Path,
		IfName:      "eth0",
		Args:        [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", p.Name}},
	}
	return p.Node.NS.Do(func(ns.NetNS) error { return fn(cni, list, rt) })
}

// AddPod creates a pod namespace on node and runs CNI ADD through libcni.
func (l *Lab) AddPod(ctx context.Context, node *Node, name string) (*Pod, error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	p := &Pod{Name: name, Node: node, ContainerID: name + "-" + hex.EncodeToString(rnd[:])}
	var err error
	if p.NS, err = l.newNS(ctx, node.Name+"-"+name); err != nil {
		return nil, err
	}
	var res *types100.Result
	err = l.cni.call(ctx, p, func(c *libcni.CNIConfig, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
		r, err := c.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		res, err = types100.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("CNI ADD %s on %s: %w\n%s", name, node.Name, err, tailFile(l.cni.logPath, 10))
	}
	for _, ipc := range res.IPs {
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		switch a = a.Unmap(); {
		case ok && a.Is4():
			p.IP = a
		case ok && a.Is6():
			p.IP6 = a
		}
	}
	if ov := l.opts.Overlay; (ov.Has4() && !p.IP.IsValid()) || (ov.Has6() && !p.IP6.IsValid()) {
		return nil, fmt.Errorf("CNI ADD %s on %s: result %v lacks an address of the %s network", name, node.Name, res, ov)
	}
	l.mu.Lock()
	l.pods = append(l.pods, p)
	l.mu.Unlock()
	l.log.Info("pod added", "pod", name, "node", node.Name, "ip", p.IP, "ip6", p.IP6)
	return p, nil
}

// DelPod runs CNI DEL through libcni and deletes the pod's namespace.
func (l *Lab) DelPod(ctx context.Context, p *Pod) error {
	err := l.cni.call(ctx, p, func(c *libcni.CNIConfig, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
		return c.DelNetworkList(ctx, list, rt)
	})
	if err != nil {
		return fmt.Errorf("CNI DEL %s on %s: %w", p.Name, p.Node.Name, err)
	}
	l.mu.Lock()
	l.pods = slices.DeleteFunc(l.pods, func(q *Pod) bool { return q == p })
	l.nsList = slices.DeleteFunc(l.nsList, func(n *NetNS) bool { return n == p.NS })
	l.mu.Unlock()
	return p.NS.Remove()
}
