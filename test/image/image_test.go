package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

const testRef = "localhost/weft:v0.0.0-test"

var testCreated = time.Unix(1767225600, 0).UTC() // 2026-01-01

// fakeELF returns a minimal x86-64 ELF executable header followed by
// payload; with interp it carries a PT_INTERP program header naming it, as
// a dynamically linked binary does.
func fakeELF(payload, interp string) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	w := func(v any) { _ = binary.Write(&b, le, v) }
	phnum := uint16(0)
	phoff := uint64(0)
	if interp != "" {
		phnum, phoff = 1, 64
	}
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* LE */, 1 /* version */, 0})
	b.Write(make([]byte, 8))
	w(uint16(2))  // ET_EXEC
	w(uint16(62)) // EM_X86_64
	w(uint32(1))  // version
	w(uint64(0))  // entry
	w(phoff)      // program headers
	w(uint64(0))  // section headers
	w(uint32(0))  // flags
	w(uint16(64)) // header size
	w(uint16(56)) // program header size
	w(phnum)
	w(uint16(64)) // section header size
	w(uint16(0))  // section headers
	w(uint16(0))  // section name table
	if interp != "" {
		s := interp + "\x00"
		w(uint32(3)) // PT_INTERP
		w(uint32(4)) // PF_R
		w(uint64(64 + 56))
		w(uint64(0))
		w(uint64(0))
		w(uint64(len(s)))
		w(uint64(len(s)))
		w(uint64(1))
		b.WriteString(s)
	}
	b.WriteString(payload)
	return b.Bytes()
}

// writeInputs writes fake static binaries for the weft image into a new
// temporary directory.
func writeInputs(t *testing.T) weftInputs {
	t.Helper()
	dir := t.TempDir()
	write := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, fakeELF("fake "+name, ""), 0o700); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return weftInputs{Weftd: write("weftd"), Weft: write("weft"), Portmap: write("portmap"), Busybox: write("busybox")}
}

func writeWeft(t *testing.T, in weftInputs, created time.Time) (Result, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "weft-image.tar")
	res, err := Write(weftSpec(testRef, in, created, []string{"/nonexistent/build/dir"}), out)
	if err != nil {
		t.Fatal(err)
	}
	return res, out
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// TestReproducible builds the image twice from the same inputs, held in two
// different directories with different file times and modes, and into two
// output directories: the digests and the tarballs must be identical, and
// neither may name a build-machine path.
func TestReproducible(t *testing.T) {
	in1, in2 := writeInputs(t), writeInputs(t)
	if err := os.Chtimes(in2.Weftd, time.Unix(1, 0), time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(in2.Weft, 0o755); err != nil {
		t.Fatal(err)
	}
	r1, out1 := writeWeft(t, in1, testCreated)
	r2, out2 := writeWeft(t, in2, testCreated)
	if r1 != r2 {
		t.Errorf("same inputs, different images:\n%+v\n%+v", r1, r2)
	}
	if s1, s2 := fileSum(t, out1), fileSum(t, out2); s1 != s2 {
		t.Errorf("same inputs, tarballs differ: sha256 %s and %s", s1, s2)
	}
	if r1.Name != testRef {
		t.Errorf("name %q, want %q", r1.Name, testRef)
	}
	data, err := os.ReadFile(out1)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Dir(in1.Weftd), filepath.Dir(out1), os.TempDir()} {
		if bytes.Contains(data, []byte(p)) {
			t.Errorf("tarball contains the build path %s", p)
		}
	}

	// Anything that changes the image changes the digest.
	if r3, _ := writeWeft(t, in1, testCreated.Add(time.Second)); r3.Digest == r1.Digest {
		t.Error("another creation time, same digest")
	}
	if err := os.WriteFile(in2.Portmap, fakeELF("other portmap", ""), 0o755); err != nil {
		t.Fatal(err)
	}
	if r4, _ := writeWeft(t, in2, testCreated); r4.Digest == r1.Digest {
		t.Error("another portmap, same digest")
	}
}

// layerEntry is what the test checks of a tar header.
type layerEntry struct {
	Name     string
	Type     byte
	Mode     int64
	Link     string
	Uid, Gid int
	Owner    string
	ModTime  time.Time
}

// readImage loads a docker-archive tarball and returns its config and the
// entries and file contents of its only layer.
func readImage(t *testing.T, p, ref string) (*v1.ConfigFile, []layerEntry, map[string][]byte) {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(p, &tag)
	if err != nil {
		t.Fatalf("read %s as %s: %v", p, ref, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var entries []layerEntry
	contents := map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, layerEntry{
			Name: h.Name, Type: h.Typeflag, Mode: h.Mode, Link: h.Linkname,
			Uid: h.Uid, Gid: h.Gid, Owner: h.Uname + ":" + h.Gname, ModTime: h.ModTime.UTC(),
		})
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			contents["/"+h.Name] = b
		}
	}
	return cfg, entries, contents
}

func TestWeftImageLayout(t *testing.T) {
	in := writeInputs(t)
	_, out := writeWeft(t, in, testCreated)
	cfg, entries, contents := readImage(t, out, testRef)

	dir := func(n string, mode int64) layerEntry {
		return layerEntry{Name: n, Type: tar.TypeDir, Mode: mode, Owner: ":", ModTime: testCreated}
	}
	file := func(n string) layerEntry {
		return layerEntry{Name: n, Type: tar.TypeReg, Mode: 0o755, Owner: ":", ModTime: testCreated}
	}
	link := func(n string) layerEntry {
		return layerEntry{Name: "bin/" + n, Type: tar.TypeSymlink, Mode: 0o777, Link: "busybox", Owner: ":", ModTime: testCreated}
	}
	want := []layerEntry{
		dir("bin/", 0o755), file("bin/busybox"),
		link("cat"), link("chmod"), link("cp"), link("ls"), link("mkdir"), link("mv"), link("rm"), link("sh"),
		dir("opt/", 0o755), dir("opt/weft/", 0o755), dir("opt/weft/cni/", 0o755),
		file("opt/weft/cni/portmap"), file("opt/weft/cni/weft"),
		dir("tmp/", 0o1777),
		dir("usr/", 0o755), dir("usr/local/", 0o755), dir("usr/local/bin/", 0o755), file("usr/local/bin/weftd"),
	}
	if diff := cmp.Diff(want, entries); diff != "" {
		t.Errorf("layer entries (-want +got):\n%s", diff)
	}
	for image, src := range map[string]string{
		"/usr/local/bin/weftd": in.Weftd, "/opt/weft/cni/weft": in.Weft,
		"/opt/weft/cni/portmap": in.Portmap, "/bin/busybox": in.Busybox,
	} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(contents[image], b) {
			t.Errorf("%s is not %s", image, src)
		}
	}

	if cfg.Architecture != "amd64" || cfg.OS != "linux" || cfg.Variant != "" {
		t.Errorf("platform %s/%s/%s, want linux/amd64", cfg.OS, cfg.Architecture, cfg.Variant)
	}
	if !cfg.Created.Time.Equal(testCreated) {
		t.Errorf("created %v, want %v", cfg.Created.Time, testCreated)
	}
	if len(cfg.History) != 1 || !cfg.History[0].Created.Time.Equal(testCreated) {
		t.Errorf("history %+v, want one entry created %v", cfg.History, testCreated)
	}
	c := cfg.Config
	if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/weftd"}) || !slices.Equal(c.Cmd, []string{"run"}) {
		t.Errorf("entrypoint %q cmd %q, want [/usr/local/bin/weftd] [run]", c.Entrypoint, c.Cmd)
	}
	if !slices.Contains(c.Env, pathEnv) {
		t.Errorf("env %q lacks %s", c.Env, pathEnv)
	}
	if got := c.Labels["org.opencontainers.image.version"]; got != "v0.0.0-test" {
		t.Errorf("version label %q, want the tag", got)
	}
}

// TestWeftImageServesManifest checks manifests/weft.yaml against the image:
// the agent's command is an executable in it, every command of the init
// container's script is on the image's PATH, and every file the script
// copies is in the image.
func TestWeftImageServesManifest(t *testing.T) {
	_, out := writeWeft(t, writeInputs(t), testCreated)
	_, entries, _ := readImage(t, out, testRef)
	byPath := map[string]layerEntry{}
	for _, e := range entries {
		byPath["/"+strings.TrimSuffix(e.Name, "/")] = e
	}
	executable := func(p string) bool {
		e, ok := byPath[p]
		if ok && e.Type == tar.TypeSymlink {
			e, ok = byPath[path.Join(path.Dir(p), e.Link)]
		}
		return ok && e.Type == tar.TypeReg && e.Mode&0o111 != 0
	}
	onPath := func(cmd string) bool {
		if path.IsAbs(cmd) {
			return executable(cmd)
		}
		for _, d := range strings.Split(strings.TrimPrefix(pathEnv, "PATH="), ":") {
			if executable(path.Join(d, cmd)) {
				return true
			}
		}
		return false
	}

	ds := loadDaemonSet(t)
	pod := ds.Spec.Template.Spec
	for _, c := range pod.Containers {
		if len(c.Command) == 0 {
			t.Errorf("container %s has no command: it would rely on the entrypoint", c.Name)
			continue
		}
		if !onPath(c.Command[0]) {
			t.Errorf("container %s runs %s: not an executable in the image", c.Name, c.Command[0])
		}
	}
	if len(pod.InitContainers) != 1 {
		t.Fatalf("%d init containers, want 1", len(pod.InitContainers))
	}
	ic := pod.InitContainers[0]
	cmd := slices.Concat(ic.Command, ic.Args)
	if len(cmd) != 3 || cmd[1] != "-c" {
		t.Fatalf("init container runs %q, want sh -c <script>", cmd)
	}
	if !onPath(cmd[0]) {
		t.Errorf("init container's shell %s is not in the image", cmd[0])
	}
	var copied int
	for line := range strings.Lines(cmd[2]) {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") || f[0] == "set" {
			continue
		}
		if !onPath(f[0]) {
			t.Errorf("init script runs %s: not on the image's PATH", f[0])
		}
		if f[0] == "cp" {
			src := f[len(f)-2]
			if !executable(src) {
				t.Errorf("init script copies %s: not an executable in the image", src)
			}
			copied++
		}
	}
	if copied == 0 {
		t.Error("init script copies nothing")
	}
}

func loadDaemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "manifests", "weft.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for doc := range strings.SplitSeq(string(data), "\n---\n") {
		if !strings.Contains(doc, "\nkind: DaemonSet\n") {
			continue
		}
		var ds appsv1.DaemonSet
		if err := yaml.UnmarshalStrict([]byte(doc), &ds); err != nil {
			t.Fatalf("DaemonSet: %v", err)
		}
		return &ds
	}
	t.Fatal("manifests/weft.yaml has no DaemonSet")
	return nil
}

// TestOtherImages checks the entrypoints and files of the images the kube
// test tier uses.
func TestOtherImages(t *testing.T) {
	dir := t.TempDir()
	bin := func(n string) string {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, fakeELF(n, ""), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		spec       Spec
		entrypoint string
		files      []string
	}{
		{pauseSpec("localhost/pause:v1", bin("pause"), testCreated, nil), "/pause", []string{"pause"}},
		{testpodSpec("localhost/weft-testpod:v1", bin("testpod"), bin("busybox"), testCreated, nil),
			"/usr/local/bin/testpod", []string{"bin/busybox", "usr/local/bin/testpod"}},
		{corednsSpec("localhost/coredns:v1.15.0", bin("coredns"), testCreated), "/coredns", []string{"coredns"}},
	}
	for _, tc := range cases {
		t.Run(tc.spec.Name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "image.tar")
			if _, err := Write(tc.spec, out); err != nil {
				t.Fatal(err)
			}
			cfg, entries, _ := readImage(t, out, tc.spec.Name)
			if cfg.Architecture != "amd64" || cfg.OS != "linux" {
				t.Errorf("platform %s/%s", cfg.OS, cfg.Architecture)
			}
			if !slices.Equal(cfg.Config.Entrypoint, []string{tc.entrypoint}) {
				t.Errorf("entrypoint %q, want [%s]", cfg.Config.Entrypoint, tc.entrypoint)
			}
			var files []string
			for _, e := range entries {
				if e.Type == tar.TypeReg {
					files = append(files, e.Name)
				}
			}
			if !slices.Equal(files, tc.files) {
				t.Errorf("files %q, want %q", files, tc.files)
			}
		})
	}
}

func TestRejects(t *testing.T) {
	in := writeInputs(t)
	cases := []struct {
		name    string
		mutate  func(*Spec)
		wantErr string
	}{
		{"dynamic busybox", func(s *Spec) {
			p := filepath.Join(t.TempDir(), "busybox")
			if err := os.WriteFile(p, fakeELF("busybox", "/lib64/ld-linux-x86-64.so.2"), 0o755); err != nil {
				t.Fatal(err)
			}
			s.Files[len(s.Files)-len(weftApplets)-1].Src = p
		}, "dynamically linked (interpreter /lib64/ld-linux-x86-64.so.2)"},
		{"not ELF", func(s *Spec) {
			p := filepath.Join(t.TempDir(), "weftd")
			if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			s.Files[0].Src = p
		}, "not an ELF executable"},
		{"build path", func(s *Spec) { s.Forbid = []string{"fake weftd"} }, "built without -trimpath"},
		{"missing input", func(s *Spec) { s.Files[1].Src = filepath.Join(t.TempDir(), "nope") }, "no such file"},
		{"bare name", func(s *Spec) { s.Name = "weft:v1" }, "registry to be explicitly defined"},
		{"no registry", func(s *Spec) { s.Name = "weftnet/weft:v1" }, "registry to be explicitly defined"},
		{"latest", func(s *Spec) { s.Name = "localhost/weft:latest" }, "tag latest"},
		{"no tag", func(s *Spec) { s.Name = "localhost/weft" }, "image name"},
		{"relative path", func(s *Spec) { s.Files[0].Path = "usr/local/bin/weftd" }, "clean absolute path"},
		{"duplicate", func(s *Spec) { s.Files[1].Path = s.Files[0].Path }, "listed twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := weftSpec(testRef, in, testCreated, nil)
			tc.mutate(&spec)
			out := filepath.Join(t.TempDir(), "image.tar")
			_, err := Write(spec, out)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s was written despite the error", out)
			}
		})
	}
}

// TestBusyboxApplets checks the applet links against the busybox the images
// are built with, when busybox-static is installed here.
func TestBusyboxApplets(t *testing.T) {
	const bb = "/bin/busybox"
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Skipf("no %s (make deps installs busybox-static)", bb)
	}
	if err := checkStatic(data); err != nil {
		t.Skipf("%s: %v", bb, err)
	}
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Fatalf("%s --list: %v", bb, err)
	}
	have := strings.Fields(string(out))
	for _, a := range slices.Concat(weftApplets, testpodApplets) {
		if !slices.Contains(have, a) {
			t.Errorf("%s has no applet %s", bb, a)
		}
	}
}

func TestRunFlags(t *testing.T) {
	in := writeInputs(t)
	out := filepath.Join(t.TempDir(), "sub", "weft-image.tar")
	var stdout bytes.Buffer
	err := run([]string{"weft", "-o", out, "-name", testRef, "-created", fmt.Sprint(testCreated.Unix()),
		"-weftd", in.Weftd, "-weft", in.Weft, "-portmap", in.Portmap, "-busybox", in.Busybox}, &stdout)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Write(weftSpec(testRef, in, testCreated, nil), filepath.Join(t.TempDir(), "again.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%s %s %s (image ID %s)\n", out, testRef, res.Digest, res.ImageID); stdout.String() != want {
		t.Errorf("printed %q, want %q", stdout.String(), want)
	}
	if err := run([]string{"weft", "-o", out, "-name", testRef}, io.Discard); err == nil || !strings.Contains(err.Error(), "-weftd is required") {
		t.Errorf("without inputs: error %v", err)
	}
	if err := run([]string{"nosuch", "-o", out, "-name", testRef}, io.Discard); err == nil || !strings.Contains(err.Error(), "unknown image") {
		t.Errorf("unknown kind: error %v", err)
	}
}
