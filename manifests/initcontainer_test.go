package manifests_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// ---------------------------------------------------------------------------
// Init container: installs the CNI binaries, never the conflist

// conflistPluginTypes returns the plugin types the ConfigMap's conflist names.
func conflistPluginTypes(t *testing.T, m manifest) []string {
	t.Helper()
	var cl struct {
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(m.cm.Data[conflistFile]), &cl); err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, p := range cl.Plugins {
		types = append(types, p.Type)
	}
	return types
}

// installScript returns the init container and its `sh -c` script.
func installScript(t *testing.T, m manifest) (corev1.Container, string) {
	t.Helper()
	ics := m.ds.Spec.Template.Spec.InitContainers
	if len(ics) != 1 {
		t.Fatalf("%d init containers, want 1", len(ics))
	}
	ic := ics[0]
	cmd := slices.Concat(ic.Command, ic.Args)
	if len(cmd) != 3 || path.Base(cmd[0]) != "sh" || cmd[1] != "-c" {
		t.Fatalf("init container runs %q, want sh -c <script>", cmd)
	}
	return ic, cmd[2]
}

const cniBinDir = "/opt/cni/bin"

func TestInitContainerInstallsBinariesAtomically(t *testing.T) {
	m := loadManifest(t)
	ic, script := installScript(t, m)

	vm := mountOf(ic, cniBinDir)
	if vm == nil || vm.ReadOnly {
		t.Fatalf("init container has no writable mount at %s", cniBinDir)
	}
	if v := volume(t, m, vm.Name); v.HostPath == nil || v.HostPath.Path != cniBinDir {
		t.Errorf("init container's %s is not the host's %s", cniBinDir, cniBinDir)
	}
	for _, vm := range ic.VolumeMounts {
		if v := volume(t, m, vm.Name); v.HostPath != nil && v.HostPath.Path == "/etc/cni/net.d" {
			t.Error("init container mounts /etc/cni/net.d: the conflist is the agent's to install")
		}
	}
	if strings.Contains(script, "conflist") || strings.Contains(script, "/etc/cni") {
		t.Errorf("init script touches the CNI config:\n%s", script)
	}

	// Simple commands, one per line (no loops), so each step can be checked.
	var cmds [][]string
	for line := range strings.Lines(script) {
		for part := range strings.SplitSeq(line, "&&") {
			if f := strings.Fields(part); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
				cmds = append(cmds, f)
			}
		}
	}
	operands := func(f []string) []string {
		var out []string
		for _, a := range f[1:] {
			if !strings.HasPrefix(a, "-") {
				out = append(out, strings.Trim(a, `"'`))
			}
		}
		return out
	}
	for _, bin := range conflistPluginTypes(t, m) {
		t.Run(bin, func(t *testing.T) {
			final := path.Join(cniBinDir, bin)
			cpAt, tmp := -1, ""
			for i, f := range cmds {
				if ops := operands(f); f[0] == "cp" && len(ops) == 2 && path.Base(ops[0]) == bin {
					cpAt, tmp = i, ops[1]
					break
				}
			}
			if cpAt < 0 {
				t.Fatalf("no `cp <image>/%s <tmp>` in the init script", bin)
			}
			if path.Dir(tmp) != cniBinDir || tmp == final {
				t.Fatalf("%s is copied to %s: want a temporary name in %s, then mv", bin, tmp, cniBinDir)
			}
			if !strings.HasPrefix(path.Base(tmp), ".") {
				t.Errorf("temporary name %s is not hidden; the runtime could pick it up as a plugin", tmp)
			}
			mvAt := slices.IndexFunc(cmds, func(f []string) bool {
				ops := operands(f)
				return f[0] == "mv" && len(ops) == 2 && ops[0] == tmp && ops[1] == final
			})
			if mvAt < cpAt {
				t.Errorf("no `mv %s %s` after the copy", tmp, final)
			}
			for _, f := range cmds {
				if ops := operands(f); f[0] != "mv" && slices.Contains(ops, final) {
					t.Errorf("%q writes %s in place", strings.Join(f, " "), final)
				}
			}
		})
	}
}

// TestInitContainerScriptRuns runs the init script under /bin/sh with its
// paths moved into temporary directories: twice, over an existing binary.
func TestInitContainerScriptRuns(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	m := loadManifest(t)
	_, script := installScript(t, m)
	const imageDir = "/opt/weft/cni"
	if !strings.Contains(script, imageDir) {
		t.Fatalf("init script does not copy from %s (where the image puts them: test/image)", imageDir)
	}
	src, dst := t.TempDir(), t.TempDir()
	script = strings.ReplaceAll(script, imageDir, src)
	script = strings.ReplaceAll(script, cniBinDir, dst)

	bins := conflistPluginTypes(t, m)
	for _, b := range bins {
		if err := os.WriteFile(filepath.Join(src, b), []byte("#!/bin/sh\n# "+b+" new\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Decoys: the image's conflist must not land in the bin dir, and an old
	// binary must be replaced by a rename (a new inode), not rewritten.
	if err := os.WriteFile(filepath.Join(src, conflistFile), []byte(wantConflist), 0o644); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dst, bins[0])
	if err := os.WriteFile(old, []byte("old"), 0o755); err != nil {
		t.Fatal(err)
	}
	oldInfo, err := os.Stat(old)
	if err != nil {
		t.Fatal(err)
	}

	for run := 1; run <= 2; run++ {
		out, err := exec.Command(sh, "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("run %d: %v\n%s", run, err, out)
		}
		entries, err := os.ReadDir(dst)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		want := slices.Sorted(slices.Values(bins))
		if !slices.Equal(names, want) {
			t.Fatalf("run %d: %s holds %v, want exactly %v", run, cniBinDir, names, want)
		}
		for _, b := range bins {
			fi, err := os.Stat(filepath.Join(dst, b))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm()&0o111 == 0 {
				t.Errorf("run %d: %s is not executable (%v)", run, b, fi.Mode())
			}
			got, _ := os.ReadFile(filepath.Join(dst, b))
			if want, _ := os.ReadFile(filepath.Join(src, b)); !bytes.Equal(got, want) {
				t.Errorf("run %d: %s content %q, want %q", run, b, got, want)
			}
		}
		if run == 1 {
			newInfo, err := os.Stat(old)
			if err != nil {
				t.Fatal(err)
			}
			if os.SameFile(oldInfo, newInfo) {
				t.Errorf("%s was rewritten in place, not replaced by a rename", bins[0])
			}
		}
	}
}
