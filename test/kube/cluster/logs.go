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

// KubeletHarmless are kubelet error lines every start on this kind of
// machine prints (KUBE-LAB.md): no CAP_SYS_RESOURCE, cgroup v1 hybrid, an
// image filesystem cadvisor cannot size, no checkpoint on a fresh node.
var KubeletHarmless = []string{
	"Failed to set rlimit on max file handles",
	"Failed to ensure process in container with oom score",
	"Image garbage collection failed once",
	"eviction manager: failed to check if we have separate container filesystem",
	"Failed to read data from checkpoint",
}

// klogError matches a klog error line: "E1202 06:45:12.123456   1234 file.go:12] msg".
var klogError = regexp.MustCompile(`^E\d{4} \d{2}:\d{2}:\d{2}\.\d+\s+\d+ \S+:\d+\] `)

// ErrorLines returns, per "<node>/<daemon>" and control-plane process, the
// klog error lines of its log that match none of allow (substrings).
func (c *Cluster) ErrorLines(allow []string) (map[string][]string, error) {
	files := map[string]string{}
	for _, n := range c.Nodes() {
		for name, path := range n.LogFiles() {
			files[n.Name+"/"+name] = path
		}
	}
	c.mu.Lock()
	for _, p := range c.cpProcs {
		files[p.name] = p.logPath
	}
	c.mu.Unlock()
	out := map[string][]string{}
	for name, path := range files {
		lines, err := errorLines(path, allow)
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
		if !klogError.MatchString(l) {
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
	for _, node := range c.Nodes() {
		for name, path := range node.LogFiles() {
			out[node.Name+"/"+name] = tailFile(path, n)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.cpProcs {
		out[p.name] = p.logTail(n)
	}
	return out
}

// LogDir is where the control plane's logs are.
func (c *Cluster) LogDir() string { return filepath.Join(c.dir, "logs") }
