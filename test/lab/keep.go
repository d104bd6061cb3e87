package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Detach gives the lab up without removing anything: it writes a cleanup
// script into the lab directory and returns how to look around and how to
// clean up. Use it with Options.Keep (otherwise the processes die with the
// lab's process). Close becomes a no-op.
func (l *Lab) Detach() (string, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return "", errors.New("lab is closed")
	}
	l.closed = true
	nodes, pods, nsList := slices.Clone(l.nodes), slices.Clone(l.pods), slices.Clone(l.nsList)
	var pids []string
	if l.etcd != nil {
		pids = append(pids, strconv.Itoa(l.etcd.PID()))
	}
	l.mu.Unlock()
	for _, n := range nodes {
		if pid := n.AgentPID(); pid != 0 {
			pids = append([]string{strconv.Itoa(pid)}, pids...)
		}
	}
	var script strings.Builder
	script.WriteString("#!/bin/sh\n# Removes the weft lab " + l.prefix + ".\n")
	if len(pids) > 0 {
		fmt.Fprintf(&script, "kill %s 2>/dev/null\nsleep 2\n", strings.Join(pids, " "))
	}
	for _, n := range slices.Backward(nsList) {
		fmt.Fprintf(&script, "ip netns del %s\n", n.Name)
	}
	fmt.Fprintf(&script, "rm -rf %s\n", l.dir)
	path := filepath.Join(filepath.Dir(l.dir), "weft-lab-"+l.prefix+"-cleanup.sh")
	if err := os.WriteFile(path, []byte(script.String()), 0o755); err != nil {
		return "", fmt.Errorf("write cleanup script: %w", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "The lab %s keeps running (logs and subnet.env files in %s).\n", l.prefix, l.dir)
	b.WriteString("Enter a namespace with `ip netns exec <name> <command>`, for example:\n")
	for _, n := range nodes {
		fmt.Fprintf(&b, "  ip netns exec %s ip route        # node %s (%s)\n", n.NS.Name, n.Name, n.IP)
	}
	if len(pods) >= 2 {
		a, z := pods[0], pods[len(pods)-1]
		fmt.Fprintf(&b, "  ip netns exec %s ping -c 3 %s   # %s/%s -> %s/%s\n", a.NS.Name, z.IP, a.Node.Name, a.Name, z.Node.Name, z.Name)
	}
	fmt.Fprintf(&b, "  ip netns exec %s etcdctl --endpoints %s get --prefix %s\n", l.etcdNS.Name, l.EtcdEndpoint(), l.opts.Prefix)
	fmt.Fprintf(&b, "Clean up (stops PIDs %s, deletes the namespaces and files):\n  sh %s && rm %s\n", strings.Join(pids, " "), path, path)
	return b.String(), nil
}
