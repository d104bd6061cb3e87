package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The CNI figures write files on every ADD: the IPAM reservation and
// libcni's result cache, both on the node's disk (/var/lib/cni). The root
// filesystem of a test VM may be ext4 without a journal, where creating a
// file scans the inodes deleted in the last minutes (ext4's find_inode_bit
// skips "recently deleted" inodes only when there is no journal), so a
// create gets slower with every pod cycle and soon costs many times what it
// costs on a journaled ext4. A node's /var/lib is journaled (ext4 or xfs),
// so the target is measured with the state on a freshly made journaled ext4
// in a loop-mounted image; the same run on the root filesystem is reported
// beside it.

// stateFS is a directory for the CNI state and how it was made.
type stateFS struct {
	dir     string
	what    string
	cleanup func()
}

// journaledExt4 makes a 128 MiB journaled ext4 image under parent and mounts
// it (loop, removed again on unmount) at parent/state.
func journaledExt4(parent string) (*stateFS, error) {
	img := filepath.Join(parent, "state.img")
	f, err := os.Create(img)
	if err != nil {
		return nil, err
	}
	err = f.Truncate(128 << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("state image: %w", err)
	}
	if err := runCmd("mkfs.ext4", "-q", "-F", "-j", img); err != nil {
		return nil, err
	}
	dir := filepath.Join(parent, "state")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	if err := runCmd("mount", "-o", "loop", img, dir); err != nil {
		return nil, err
	}
	return &stateFS{dir: dir, what: "state on a journaled ext4 (loop)", cleanup: func() {
		if err := runCmd("umount", dir); err != nil {
			fmt.Fprintf(os.Stderr, "bench cni: %v\n", err)
		}
	}}, nil
}

// rootFS is a directory under parent, on whatever filesystem parent is on.
func rootFS(parent string) (*stateFS, error) {
	dir := filepath.Join(parent, "state-rootfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	what := "state on " + fsType(parent)
	return &stateFS{dir: dir, what: what, cleanup: func() {}}, nil
}

// fsType names the filesystem of dir, and says when an ext4 has no journal.
func fsType(dir string) string {
	out, err := exec.Command("findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target", dir).Output()
	if err != nil {
		return "the root filesystem"
	}
	f := strings.Fields(string(out))
	if len(f) < 2 {
		return "the root filesystem"
	}
	if f[0] == "ext4" {
		if dev, ok := strings.CutPrefix(f[1], "/dev/"); ok && !hasJournal(dev) {
			return "the root filesystem (ext4, no journal)"
		}
	}
	return "the root filesystem (" + f[0] + ")"
}

// hasJournal: jbd2 lists a journal per ext4 device that has one, named
// "<dev>-<journal inode>".
func hasJournal(dev string) bool {
	entries, err := os.ReadDir("/proc/fs/jbd2")
	if err != nil {
		return true // cannot tell
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), dev+"-") {
			return true
		}
	}
	return false
}

func runCmd(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
