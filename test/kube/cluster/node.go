package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// Node is one Kubernetes node: a network namespace and a mount namespace
// of its own (held by a holder process), with containerd, kubelet and
// kube-proxy.
type Node struct {
	Name   string     // node1, node2: the Kubernetes node name
	IP     netip.Addr // eth0 on the switch; the node's first InternalIP
	IP6    netip.Addr // eth0's IPv6 address; the node's second InternalIP
	NS     *lab.NetNS // <prefix>-<Name>
	Dir    string     // configs, logs and the directories mounted into the node
	Cgroup string     // the kubelet's cgroupRoot, /<prefix>-<Name> in every hierarchy

	c          *Cluster
	mu         sync.Mutex
	holder     *proc
	mntNS      string // the holder's mount namespace ("mnt:[4026...]")
	containerd *proc
	kubelet    *proc
	proxy      *proc
	proxyMode  string
}

// nodeMounts are the node's own directories, mounted over the host's paths
// inside the node's mount namespace (dir is under Node.Dir/fs). /run comes
// last: subnet.env, pod netns files, containerd's sockets and fifos and the
// xtables lock are all per node.
var nodeMounts = []struct{ target, dir string }{
	{"/etc/cni/net.d", "etc-cni-net.d"},
	{"/opt/cni/bin", "opt-cni-bin"},
	{"/var/lib/kubelet", "var-lib-kubelet"},
	{"/var/lib/cni", "var-lib-cni"},
	{"/var/log/pods", "var-log-pods"},
	{"/var/log/containers", "var-log-containers"},
	{"/run", "run"},
}

// HostPath is where path inside the node (under one of nodeMounts) is seen
// from the test: e.g. /run/flannel/subnet.env → <Dir>/fs/run/flannel/subnet.env.
func (n *Node) HostPath(path string) string {
	for _, m := range nodeMounts {
		if rest, ok := strings.CutPrefix(path, m.target); ok && (rest == "" || rest[0] == '/') {
			return filepath.Join(n.Dir, "fs", m.dir, rest)
		}
	}
	return path
}

// SubnetEnv is the host path of the node's /run/flannel/subnet.env.
func (n *Node) SubnetEnv() string { return n.HostPath("/run/flannel/subnet.env") }

// IPAMDir is the host path of the weft network's IPAM directory
// (/var/lib/cni/networks/cbr0: one reservation file per pod IP).
func (n *Node) IPAMDir() string { return n.HostPath("/var/lib/cni/networks/cbr0") }

// mountScript is run by sh inside the holder's namespaces. It replaces the
// host's /sys with a sysfs of the node's network namespace (what `ip netns
// exec` does, but keeping the cgroup tree, which kubelet and runc need),
// then mounts the node's directories. A mount point missing on the host is
// created inside an overlay of its nearest existing parent (upper layer
// under Dir/ovl), so the host's filesystem is never written.
func (n *Node) mountScript() (string, error) {
	var b strings.Builder
	aside := filepath.Join(n.Dir, "mnt", "cgroup")
	if err := os.MkdirAll(aside, 0o755); err != nil {
		return "", fmt.Errorf("%s: %w", n.Name, err)
	}
	fmt.Fprintf(&b, "set -eu\nmount --rbind %s %s\nmount -t sysfs sysfs /sys\nmount --rbind %s %s\numount -l %s\n",
		cgroupMount, aside, aside, cgroupMount, aside)
	overlaid := map[string]bool{}
	for _, m := range nodeMounts {
		src := filepath.Join(n.Dir, "fs", m.dir)
		if err := os.MkdirAll(src, 0o755); err != nil {
			return "", fmt.Errorf("%s: %w", n.Name, err)
		}
		if _, err := os.Stat(m.target); err != nil {
			parent := filepath.Dir(m.target)
			for {
				if _, err := os.Stat(parent); err == nil {
					break
				}
				parent = filepath.Dir(parent)
			}
			if !overlaid[parent] {
				overlaid[parent] = true
				ovl := filepath.Join(n.Dir, "ovl", strings.ReplaceAll(strings.Trim(parent, "/"), "/", "-"))
				upper, work := filepath.Join(ovl, "upper"), filepath.Join(ovl, "work")
				if err := errors.Join(os.MkdirAll(upper, 0o755), os.MkdirAll(work, 0o755)); err != nil {
					return "", fmt.Errorf("%s: overlay dirs: %w", n.Name, err)
				}
				fmt.Fprintf(&b, "mount -t overlay overlay -o lowerdir=%s,upperdir=%s,workdir=%s %s\n", parent, upper, work, parent)
			}
			fmt.Fprintf(&b, "mkdir -p %s\n", m.target)
		}
		fmt.Fprintf(&b, "mount --bind %s %s\n", src, m.target)
	}
	return b.String(), nil
}

// startHolder starts the process that holds the node's mount namespace
// (private propagation, inside the node's network namespace) and mounts
// the node's view of the filesystem in it.
func (n *Node) startHolder(ctx context.Context) error {
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return fmt.Errorf("own mount namespace: %w", err)
	}
	p, err := startProc(n.Name+"-holder", filepath.Join(n.Dir, "holder.log"), n.c.env,
		"nsenter", "--net="+n.NS.Path, "--", "unshare", "--mount", "--propagation", "private", "--", "sleep", "infinity")
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.holder = p
	n.mu.Unlock()
	pid := strconv.Itoa(p.PID())
	deadline := time.Now().Add(5 * time.Second)
	for {
		mnt, err := os.Readlink("/proc/" + pid + "/ns/mnt")
		comm, _ := os.ReadFile("/proc/" + pid + "/comm")
		if err == nil && mnt != self && strings.TrimSpace(string(comm)) == "sleep" {
			n.mntNS = mnt
			break
		}
		if done, werr := p.exited(); done {
			return fmt.Errorf("%s: holder exited (%v): %s", n.Name, werr, p.logTail(10))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: holder did not enter its mount namespace", n.Name)
		}
		time.Sleep(5 * time.Millisecond)
	}
	script, err := n.mountScript()
	if err != nil {
		return err
	}
	if _, err := n.Run(ctx, "", "sh", "-c", script); err != nil {
		return fmt.Errorf("%s: mount the node's filesystem: %w", n.Name, err)
	}
	return nil
}

// enter is the nsenter prefix that puts a command into the node's network
// and mount namespaces.
func (n *Node) enter() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return []string{"nsenter", "-t", strconv.Itoa(n.holder.PID()), "-n", "-m", "--"}
}

// Run runs a command inside the node (network and mount namespace) and
// returns its combined output.
func (n *Node) Run(ctx context.Context, stdin string, argv ...string) (string, error) {
	out, err := runCmd(ctx, n.c.env, stdin, append(n.enter(), argv...)...)
	if err != nil {
		return out, fmt.Errorf("%s: %w", n.Name, err)
	}
	return out, nil
}

// Output runs a command inside the node and returns its stdout.
func (n *Node) Output(ctx context.Context, argv ...string) (string, error) {
	out, err := outputCmd(ctx, n.c.env, append(n.enter(), argv...)...)
	if err != nil {
		return out, fmt.Errorf("%s: %w", n.Name, err)
	}
	return out, nil
}

// start runs the node's holder, containerd (and imports the images),
// kubelet and kube-proxy.
func (n *Node) start(ctx context.Context) error {
	if err := createCgroupRoot(n.Cgroup); err != nil {
		return err
	}
	if err := n.startHolder(ctx); err != nil {
		return err
	}
	if err := n.startContainerd(ctx); err != nil {
		return err
	}
	if err := n.importImages(ctx); err != nil {
		return err
	}
	if err := n.startKubelet(); err != nil {
		return err
	}
	return n.StartProxy(n.c.opts.ProxyMode)
}

func (n *Node) startDaemon(name string, args ...string) (*proc, error) {
	argv := append(n.enter(), args...)
	p, err := startProc(n.Name+"/"+name, filepath.Join(n.Dir, name+".log"), n.c.env, argv...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.Name, err)
	}
	n.c.log.Info("started", "node", n.Name, "proc", name, "pid", p.PID())
	return p, nil
}

const containerdSock = "/run/containerd/containerd.sock"

func (n *Node) startContainerd(ctx context.Context) error {
	conf := filepath.Join(n.Dir, "containerd.toml")
	if err := os.WriteFile(conf, []byte(n.containerdConfig()), 0o644); err != nil {
		return fmt.Errorf("%s: write containerd config: %w", n.Name, err)
	}
	p, err := n.startDaemon("containerd", n.c.bin("containerd"), "--config", conf)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.containerd = p
	n.mu.Unlock()
	// The socket is in the node's /run, which the test sees at its host path.
	sock := n.HostPath(containerdSock)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if conn, err := net.Dial("unix", sock); err == nil {
			conn.Close()
			break
		}
		if done, werr := p.exited(); done {
			return fmt.Errorf("%s: containerd exited (%v):\n%s", n.Name, werr, p.logTail(30))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: containerd socket %s not ready:\n%s", n.Name, sock, p.logTail(30))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func (n *Node) importImages(ctx context.Context) error {
	for _, tarball := range n.c.opts.Images {
		if _, err := n.Run(ctx, "", n.c.bin("ctr"), "--address", containerdSock, "-n", "k8s.io",
			"images", "import", tarball); err != nil {
			return fmt.Errorf("import %s: %w", tarball, err)
		}
	}
	return nil
}

func (n *Node) startKubelet() error {
	conf := filepath.Join(n.Dir, "kubelet.yaml")
	if err := os.WriteFile(conf, []byte(n.kubeletConfig()), 0o644); err != nil {
		return fmt.Errorf("%s: write kubelet config: %w", n.Name, err)
	}
	p, err := n.startDaemon("kubelet", n.c.bin("kubelet"), "--config", conf, "--kubeconfig", n.c.Kubeconfig(),
		"--hostname-override", n.Name, "--node-ip", dualList(n.IP, n.IP6))
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.kubelet = p
	n.mu.Unlock()
	return nil
}

// StartProxy (re)starts kube-proxy in mode (iptables or nftables). Started
// in one mode, kube-proxy removes the other mode's rules itself.
func (n *Node) StartProxy(mode string) error {
	if err := n.StopProxy(); err != nil {
		return err
	}
	conf := filepath.Join(n.Dir, "kube-proxy-"+mode+".yaml")
	if err := os.WriteFile(conf, []byte(n.proxyConfig(mode)), 0o644); err != nil {
		return fmt.Errorf("%s: write kube-proxy config: %w", n.Name, err)
	}
	p, err := n.startDaemon("kube-proxy", n.c.bin("kube-proxy"), "--config", conf)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.proxy, n.proxyMode = p, mode
	n.mu.Unlock()
	return nil
}

// StopProxy stops kube-proxy (its rules stay).
func (n *Node) StopProxy() error {
	n.mu.Lock()
	p := n.proxy
	n.proxy = nil
	n.mu.Unlock()
	if p == nil {
		return nil
	}
	if _, err := p.stop(5 * time.Second); err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	return nil
}

// ProxyMode is the mode kube-proxy runs in.
func (n *Node) ProxyMode() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proxyMode
}

// Exited names a daemon of the node that exited on its own, with its log.
func (n *Node) Exited() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range []*proc{n.holder, n.containerd, n.kubelet, n.proxy} {
		if p == nil {
			continue
		}
		if done, err := p.exited(); done {
			return fmt.Errorf("%s exited (%v):\n%s", p.name, err, p.logTail(20))
		}
	}
	return nil
}

// LogFiles are the node's daemon logs by name (containerd, kubelet, kube-proxy).
func (n *Node) LogFiles() map[string]string {
	return map[string]string{
		"containerd": filepath.Join(n.Dir, "containerd.log"),
		"kubelet":    filepath.Join(n.Dir, "kubelet.log"),
		"kube-proxy": filepath.Join(n.Dir, "kube-proxy.log"),
	}
}

// stop ends everything running in the node: kube-proxy and kubelet, the
// pods' processes (by cgroup), containerd, then what is left in the node's
// mount namespace (the shims, found by namespace: containerd started them
// there and they do not leave it) and the holder, whose exit unmounts it all.
func (n *Node) stop() error {
	var errs []error
	n.mu.Lock()
	daemons := []*proc{n.proxy, n.kubelet}
	containerd, holder := n.containerd, n.holder
	n.mu.Unlock()
	for _, p := range daemons {
		if p == nil {
			continue
		}
		if killed, err := p.stop(5 * time.Second); err != nil {
			errs = append(errs, err)
		} else if killed {
			n.c.log.Warn("killed after 5 s", "proc", p.name)
		}
	}
	errs = append(errs, killCgroup(n.Cgroup))
	if containerd != nil {
		if _, err := containerd.stop(5 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if holder != nil && n.mntNS != "" {
		errs = append(errs, killMountNS(n.mntNS, holder.PID()))
	}
	if holder != nil {
		if _, err := holder.stop(2 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killMountNS SIGKILLs every process in mount namespace mnt except keep,
// and waits (10 s at most) until they are gone.
func killMountNS(mnt string, keep int) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := mountNSPIDs(mnt, keep)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v in %s survive SIGKILL", pids, mnt)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mountNSPIDs(mnt string, keep int) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == keep {
			continue
		}
		// A zombie's namespace links cannot be read: it holds no namespace.
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/mnt"); err == nil && l == mnt {
			pids = append(pids, pid)
		}
	}
	return pids
}
