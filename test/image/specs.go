package main

import (
	"path"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

// Paths in the weft image that manifests/weft.yaml depends on: the agent
// container runs weftdPath; the init container's shell script copies
// cniDir/<plugin> into the host's /opt/cni/bin. The test checks the manifest
// against the image.
const (
	weftdPath  = "/usr/local/bin/weftd"
	cniDir     = "/opt/weft/cni"
	busyboxBin = "/bin/busybox"
)

// weftApplets are busybox's links in the weft image: what the init
// container's script runs (cp, chmod, mv under sh) and a little for looking
// around with `kubectl exec`.
var weftApplets = []string{"cat", "chmod", "cp", "ls", "mkdir", "mv", "rm", "sh"}

// testpodApplets: a shell and what inspecting a pod's network needs.
var testpodApplets = []string{"cat", "echo", "env", "hostname", "ip", "ls", "sh", "sleep"}

// pathEnv is the usual PATH: the shells find the applets in /bin.
const pathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func labels(title, ref string) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":    title,
		"org.opencontainers.image.version":  tagOf(ref),
		"org.opencontainers.image.source":   "https://github.com/weftnet/weft",
		"org.opencontainers.image.licenses": "Apache-2.0",
	}
}

// tagOf returns the tag of a reference ("" when it does not parse; Build
// then rejects it).
func tagOf(ref string) string {
	t, err := name.NewTag(ref)
	if err != nil {
		return ""
	}
	return t.TagStr()
}

func busybox(src string, applets []string) []File {
	files := []File{{Path: busyboxBin, Src: src, Mode: 0o755, Static: true}}
	for _, a := range applets {
		files = append(files, File{Path: path.Join(path.Dir(busyboxBin), a), Link: path.Base(busyboxBin)})
	}
	return files
}

// weftInputs are the build machine's files that go into the weft image.
type weftInputs struct {
	Weftd, Weft, Portmap, Busybox string
}

// weftSpec is the image manifests/weft.yaml runs: weftd, the CNI binaries
// the init container installs, and a static busybox for its shell.
func weftSpec(ref string, in weftInputs, created time.Time, forbid []string) Spec {
	files := []File{
		{Path: weftdPath, Src: in.Weftd, Mode: 0o755, Static: true, Trimmed: true},
		{Path: path.Join(cniDir, "weft"), Src: in.Weft, Mode: 0o755, Static: true, Trimmed: true},
		{Path: path.Join(cniDir, "portmap"), Src: in.Portmap, Mode: 0o755, Static: true, Trimmed: true},
	}
	return Spec{
		Name:       ref,
		Files:      append(files, busybox(in.Busybox, weftApplets)...),
		Entrypoint: []string{weftdPath},
		Cmd:        []string{"run"},
		Env:        []string{pathEnv},
		WorkingDir: "/",
		Labels:     labels("weft", ref),
		Created:    created,
		Forbid:     forbid,
	}
}

// pauseSpec is the pod sandbox image: one static binary that waits for
// SIGTERM.
func pauseSpec(ref, pause string, created time.Time, forbid []string) Spec {
	return Spec{
		Name:       ref,
		Files:      []File{{Path: "/pause", Src: pause, Mode: 0o755, Static: true, Trimmed: true}},
		Entrypoint: []string{"/pause"},
		Env:        []string{pathEnv},
		WorkingDir: "/",
		Labels:     labels("pause", ref),
		Created:    created,
		Forbid:     forbid,
	}
}

// testpodSpec is the test tier's client and server image: the testpod
// helper (HTTP, DNS, ping) and a busybox shell.
func testpodSpec(ref, testpod, bb string, created time.Time, forbid []string) Spec {
	files := []File{{Path: "/usr/local/bin/testpod", Src: testpod, Mode: 0o755, Static: true, Trimmed: true}}
	return Spec{
		Name:       ref,
		Files:      append(files, busybox(bb, testpodApplets)...),
		Entrypoint: []string{"/usr/local/bin/testpod"},
		Cmd:        []string{"serve"},
		Env:        []string{pathEnv},
		WorkingDir: "/",
		Labels:     labels("weft-testpod", ref),
		Created:    created,
		Forbid:     forbid,
	}
}

// corednsSpec is CoreDNS laid out as its upstream image: /coredns as the
// entrypoint; the Deployment passes -conf.
func corednsSpec(ref, coredns string, created time.Time) Spec {
	return Spec{
		Name:       ref,
		Files:      []File{{Path: "/coredns", Src: coredns, Mode: 0o755, Static: true}},
		Entrypoint: []string{"/coredns"},
		Env:        []string{pathEnv},
		WorkingDir: "/",
		Labels:     labels("coredns", ref),
		Created:    created,
	}
}
