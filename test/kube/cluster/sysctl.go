package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// kubeletSysctls are the machine-wide settings the kubelet changes at start
// (setupKernelTunables in pkg/kubelet/cm/container_manager_linux.go); they
// are not per network namespace.
var kubeletSysctls = []string{
	"vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
	"kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes",
}

// sysctlStateFile records the values from before the first of the runs on
// this machine that are still alive, and those runs: each run registers
// before its kubelets start and unregisters at Close; the last one out (or
// the next one after a run that died) restores the values and removes the
// file. Runs that share the machine thus restore the original values, not
// each other's.
const sysctlStateFile = "/run/weft-kube-sysctls.json"

type sysctlState struct {
	Saved map[string]string `json:"saved"`
	Runs  map[string]int    `json:"runs"` // run prefix → PID of its test process
}

func sysctlPath(key string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
}

func readSysctl(key string) (string, error) {
	b, err := os.ReadFile(sysctlPath(key))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", key, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// registerSysctls records run (and, if it is the first live run, the
// current values) in the state file.
func registerSysctls(run string) error {
	return withSysctlState(func(st *sysctlState) error {
		if len(st.Runs) == 0 {
			st.Saved = map[string]string{}
			for _, k := range kubeletSysctls {
				v, err := readSysctl(k)
				if err != nil {
					return err
				}
				st.Saved[k] = v
			}
		}
		st.Runs[run] = os.Getpid()
		return nil
	})
}

// releaseSysctls removes run; when no live run is left it writes the saved
// values back and removes the state file.
func releaseSysctls(run string) error {
	return withSysctlState(func(st *sysctlState) error {
		delete(st.Runs, run)
		if len(st.Runs) > 0 {
			return nil
		}
		var errs []error
		for _, k := range slices.Sorted(maps.Keys(st.Saved)) {
			if err := os.WriteFile(sysctlPath(k), []byte(st.Saved[k]+"\n"), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", k, st.Saved[k], err))
			}
		}
		return errors.Join(errs...)
	})
}

// withSysctlState runs f on the state under an exclusive flock of the state
// file, dropping runs whose process is gone first. It writes the state back,
// or removes the file when no run is left.
func withSysctlState(f func(*sysctlState) error) error {
	fh, err := lockFile(sysctlStateFile)
	if err != nil {
		return err
	}
	defer fh.Close() // releases the lock
	st := sysctlState{Runs: map[string]int{}}
	b, err := os.ReadFile(sysctlStateFile)
	if err != nil {
		return fmt.Errorf("read %s: %w", sysctlStateFile, err)
	}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("decode %s: %w", sysctlStateFile, err)
		}
		if st.Runs == nil {
			st.Runs = map[string]int{}
		}
	}
	for run, pid := range st.Runs {
		if syscall.Kill(pid, 0) != nil {
			delete(st.Runs, run)
		}
	}
	ferr := f(&st)
	if len(st.Runs) == 0 {
		if err := os.Remove(sysctlStateFile); err != nil {
			return errors.Join(ferr, fmt.Errorf("remove %s: %w", sysctlStateFile, err))
		}
		return ferr
	}
	out, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return errors.Join(ferr, fmt.Errorf("encode %s: %w", sysctlStateFile, err))
	}
	if err := os.WriteFile(sysctlStateFile, out, 0o644); err != nil {
		return errors.Join(ferr, fmt.Errorf("write %s: %w", sysctlStateFile, err))
	}
	return ferr
}

// lockFile opens (creating) path and takes an exclusive flock on it. The
// file is removed by the last holder, so after locking it checks that the
// path still names the locked file and retries otherwise.
func lockFile(path string) (*os.File, error) {
	for {
		fh, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
		if err := syscall.Flock(int(fh.Fd()), syscall.LOCK_EX); err != nil {
			fh.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		var held, named syscall.Stat_t
		if syscall.Fstat(int(fh.Fd()), &held) == nil && syscall.Stat(path, &named) == nil && held.Ino == named.Ino {
			return fh, nil
		}
		fh.Close()
	}
}
