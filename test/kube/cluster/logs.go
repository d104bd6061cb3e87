package cluster

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Harmless is an error line a daemon prints in a healthy run, with why.
type Harmless struct {
	Daemon string // "kubelet", "containerd", "kube-proxy", "kube-apiserver", "weftd", ...
	Text   string // substring of the line
	Why    string
}

// KnownHarmless are the error lines a healthy cluster in namespaces prints
// (collected from the tier's own runs), each with the reason it is harmless.
var KnownHarmless = []Harmless{
	{"kubelet", "Failed to set rlimit on max file handles", "no CAP_SYS_RESOURCE"},
	{"kubelet", "Failed to ensure process in container with oom score", "no CAP_SYS_RESOURCE; PID 1 is not an init the kubelet knows"},
	{"kubelet", "Image garbage collection failed once", "cadvisor has no stats of the image filesystem yet at start"},
	{"kubelet", "eviction manager: failed to check if we have separate container filesystem", "containerd reports no imagefs label"},
	{"kubelet", "Failed to read data from checkpoint", "a fresh node has no device-manager checkpoint"},
	{"kubelet", "Skipping pod synchronization", "the first seconds after start (PLEG, runtime status not polled yet)"},
	{"kubelet", `\"NODE\" not found`, "before the kubelet has registered its node"},
	{"kubelet", "Failed to initialize CSINode", "its retries ran out before the node was registered (a loaded machine); the kubelet carries on"},
	{"kubelet", "ContainerStatus from runtime service failed", "a deleted pod's container is gone before the kubelet's last status call (NotFound)"},
	{"kubelet", "Error proxying data from", "a kubectl exec stream ends while the kubelet still forwards between it and the runtime's stream server"},
	{"kubelet", "Partial failure issuing cadvisor.ContainerInfoV2", "stats of a container created or removed a moment ago"},
	{"containerd", "collecting metrics for", "metrics of a container whose cgroup or shim just went away"},
	{"containerd", "failed to load cni during init", "no CNI config until weftd installs it"},
	{"containerd", "failed to reload cni configuration after receiving fs change event", "a write or removal in /etc/cni/net.d that leaves no valid config at that instant (weftd's temporary file, the conflist withdrawn)"},
	{"containerd", "ContainerStatus for", "the kubelet's NotFound race above, seen from containerd"},
	{"containerd", "failed sending message on channel", "a shim's ttrpc connection closed as its last container exits"},
	{"kube-proxy", "Failed to list existing nftables objects", "the nftables mode's first sync, before its table exists"},
	{"kube-apiserver", `namespaces \"kube-system\" not found`, "controllers that start before the apiserver has created kube-system"},
	{"kube-apiserver", "use of closed network connection", "an exec or watch stream closed by its client"},
	{"kube-apiserver", `"http2: stream closed"`, "a watch closed by its client (kubectl rollout status, wait)"},
}

// errorLine matches an error in klog ("E1202 06:45:12.123456 1234 f.go:1] "),
// logrus (level=error) and slog (level=ERROR) output; pod logs carry the
// container's lines after the CRI prefix.
var errorLine = regexp.MustCompile(`(^|\s)E\d{4} \d{2}:\d{2}:\d{2}\.\d+\s|level=(error|fatal|ERROR)\b`)

// logFiles maps a daemon name ("node1/kubelet", "kube-apiserver",
// "node1/weftd/<pod>") to its log file.
func (c *Cluster) logFiles() map[string]string {
	files := map[string]string{}
	for _, n := range c.Nodes() {
		for name, path := range n.LogFiles() {
			files[n.Name+"/"+name] = path
		}
		// weftd's container logs, every container instance of every weft pod.
		pods, _ := filepath.Glob(filepath.Join(n.HostPath("/var/log/pods"), "kube-weft_*", "weftd", "*.log"))
		for _, p := range pods {
			pod := strings.SplitN(filepath.Base(filepath.Dir(filepath.Dir(p))), "_", 3)
			files[n.Name+"/weftd/"+pod[1]+"/"+filepath.Base(p)] = p
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.cpProcs {
		files[p.name] = p.logPath
	}
	return files
}

// daemonOf is the daemon part of a logFiles name ("node1/kubelet" → kubelet).
func daemonOf(name string) string {
	parts := strings.Split(name, "/")
	if len(parts) == 1 {
		return parts[0]
	}
	return parts[1]
}

// ErrorLines returns, per daemon log, the error lines that neither
// KnownHarmless nor extra allow.
func (c *Cluster) ErrorLines(extra []Harmless) (map[string][]string, error) {
	allow := append(slices.Clone(KnownHarmless), extra...)
	out := map[string][]string{}
	for name, path := range c.logFiles() {
		var node string
		if i := strings.Index(name, "/"); i > 0 {
			node = name[:i]
		}
		var mine []string
		for _, h := range allow {
			if h.Daemon == daemonOf(name) {
				mine = append(mine, strings.ReplaceAll(h.Text, "NODE", node))
			}
		}
		lines, err := errorLines(path, mine)
		if err != nil {
			return nil, err
		}
		if len(lines) > 0 {
			out[name] = lines
		}
	}
	return out, nil
}

func errorLines(path string, allow []string) ([]string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read log: %w", err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		l := sc.Text()
		if !errorLine.MatchString(l) {
			continue
		}
		if slices.ContainsFunc(allow, func(a string) bool { return strings.Contains(l, a) }) {
			continue
		}
		lines = append(lines, l)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return lines, nil
}

// LogTails returns the last n lines of every daemon's log, by name.
func (c *Cluster) LogTails(n int) map[string]string {
	out := map[string]string{}
	for name, path := range c.logFiles() {
		out[name] = tailFile(path, n)
	}
	return out
}

// CopyLogs copies every daemon's log into dst (created), the name's
// slashes turned into dashes.
func (c *Cluster) CopyLogs(dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("copy logs: %w", err)
	}
	for name, path := range c.logFiles() {
		b, err := os.ReadFile(path)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("copy logs: %w", err)
		}
		out := filepath.Join(dst, strings.ReplaceAll(strings.TrimSuffix(name, ".log"), "/", "-")+".log")
		if err := os.WriteFile(out, b, 0o644); err != nil {
			return fmt.Errorf("copy logs: %w", err)
		}
	}
	return nil
}
