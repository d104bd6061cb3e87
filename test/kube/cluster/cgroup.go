package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupMount is where the machine's cgroup hierarchies are mounted: v1
// controllers in their own directories, cgroup2 at unified (hybrid mode).
const cgroupMount = "/sys/fs/cgroup"

// cgroupCreateIn are the hierarchies in which a node's cgroup root is made
// before its kubelet starts: the ones the kubelet checks for cgroupRoot, and
// the unified one. runc creates the pods' cgroups below it in the others.
var cgroupCreateIn = []string{"cpu", "cpuacct", "cpuset", "memory", "pids", "systemd", "unified"}

// hierarchies lists the mounted cgroup hierarchies (directories under
// /sys/fs/cgroup that are mount points of their own, or cgroup2 itself).
func hierarchies() ([]string, error) {
	ents, err := os.ReadDir(cgroupMount)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", cgroupMount, err)
	}
	var hs []string
	for _, e := range ents {
		if e.IsDir() {
			hs = append(hs, filepath.Join(cgroupMount, e.Name()))
		}
	}
	if _, err := os.Stat(filepath.Join(cgroupMount, "cgroup.procs")); err == nil {
		hs = []string{cgroupMount} // pure cgroup v2
	}
	return hs, nil
}

// createCgroupRoot makes /<name> in every hierarchy the kubelet needs and
// gives the cpuset one the parent's CPUs and memory nodes (a v1 cpuset
// without them accepts no task).
func createCgroupRoot(name string) error {
	for _, h := range cgroupCreateIn {
		base := filepath.Join(cgroupMount, h)
		if _, err := os.Stat(base); err != nil {
			continue
		}
		dir := filepath.Join(base, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		if h != "cpuset" {
			continue
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(base, f))
			if err != nil {
				return fmt.Errorf("read %s: %w", filepath.Join(base, f), err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
				return fmt.Errorf("write %s: %w", filepath.Join(dir, f), err)
			}
		}
	}
	return nil
}

// cgroupDirs returns every directory of /<name> in every hierarchy, deepest
// first.
func cgroupDirs(name string) ([]string, error) {
	hs, err := hierarchies()
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, h := range hs {
		root := filepath.Join(h, name)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("walk %s: %w", root, err)
		}
	}
	slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return dirs, nil
}

// cgroupPIDs lists the processes in every cgroup below /<name>.
func cgroupPIDs(name string) ([]int, error) {
	dirs, err := cgroupDirs(name)
	if err != nil {
		return nil, err
	}
	seen := map[int]bool{}
	var pids []int
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue // removed meanwhile
		}
		for _, f := range bytes.Fields(b) {
			pid, err := strconv.Atoi(string(f))
			if err == nil && !seen[pid] {
				seen[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	return pids, nil
}

// killCgroup SIGKILLs every process in the cgroups below /<name> until none
// is left (the pods' processes: their cgroups carry the run's prefix, so
// they are the run's own), at most 10 s.
func killCgroup(name string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids, err := cgroupPIDs(name)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: processes %v survive SIGKILL", name, pids)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// removeCgroupRoot removes /<name> and everything below it in every
// hierarchy (the processes must be gone). A cgroup whose last process just
// died can stay busy for a moment, so rmdir is retried briefly.
func removeCgroupRoot(name string) error {
	dirs, err := cgroupDirs(name)
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		var err error
		for range 50 {
			if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
				err = nil
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}
