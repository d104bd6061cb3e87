package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// File is one entry of the image's only layer: a regular file copied from
// Src, or a symlink to Link. Parent directories are added by the builder.
type File struct {
	Path string      // absolute path in the image
	Src  string      // file on the build machine (regular files)
	Link string      // symlink target (symlinks)
	Mode fs.FileMode // permission bits of a regular file
	// Static requires Src to be a statically linked x86-64 ELF executable:
	// the images have no libc and no dynamic loader.
	Static bool
	// Trimmed marks a binary built here with -trimpath: it must contain
	// none of the Spec's Forbid strings.
	Trimmed bool
}

// Spec describes an image: one layer of Files and the config.
type Spec struct {
	Name       string // fully qualified reference, e.g. localhost/weft:v1
	Files      []File
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	Labels     map[string]string
	// Created is the config's creation time and every file's modification
	// time: a fixed value (SOURCE_DATE_EPOCH) makes the image reproducible.
	Created time.Time
	// Forbid lists strings no Trimmed file may contain: the build directory
	// and the module cache, so a binary built without -trimpath is refused.
	Forbid []string
}

// Result names what Write produced.
type Result struct {
	Name    string  // reference written into the archive's RepoTags
	Digest  v1.Hash // manifest digest
	ImageID v1.Hash // config digest: the image ID containerd and crictl show
}

// Dir modes and owners are fixed: every entry is owned by 0:0, directories
// are 0755 (0 1777 for /tmp), whatever the build machine's umask or user.
const dirMode = 0o755

// validateRef requires a fully qualified reference with an explicit tag other
// than latest: a bare name is resolved against a public registry and :latest
// makes the kubelet pull on every start.
func validateRef(ref string) (name.Tag, error) {
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return name.Tag{}, fmt.Errorf("image name %q (want registry/name:tag, e.g. localhost/weft:v1): %w", ref, err)
	}
	if tag.TagStr() == "latest" {
		return name.Tag{}, fmt.Errorf("image name %q: tag latest makes the kubelet pull it; use a version", ref)
	}
	return tag, nil
}

// Build assembles the image spec describes.
func Build(spec Spec) (v1.Image, name.Tag, error) {
	tag, err := validateRef(spec.Name)
	if err != nil {
		return nil, name.Tag{}, err
	}
	layerTar, err := layerTar(spec)
	if err != nil {
		return nil, name.Tag{}, fmt.Errorf("image %s: %w", spec.Name, err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, name.Tag{}, fmt.Errorf("image %s: layer: %w", spec.Name, err)
	}
	created := v1.Time{Time: spec.Created.UTC()}
	cfg := &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      created,
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Entrypoint: spec.Entrypoint,
			Cmd:        spec.Cmd,
			Env:        spec.Env,
			WorkingDir: spec.WorkingDir,
			Labels:     spec.Labels,
		},
	}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, name.Tag{}, fmt.Errorf("image %s: config: %w", spec.Name, err)
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: created, CreatedBy: "weft test/image", Comment: "one layer, written without Docker"},
	})
	if err != nil {
		return nil, name.Tag{}, fmt.Errorf("image %s: append layer: %w", spec.Name, err)
	}
	return img, tag, nil
}

// Write builds the image and writes it as a docker-archive tarball (what
// `docker save` writes and `ctr images import`, `crane push` and skopeo's
// docker-archive: transport read) to out, through a temporary file renamed
// into place.
func Write(spec Spec, out string) (Result, error) {
	img, tag, err := Build(spec)
	if err != nil {
		return Result{}, err
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		_ = os.Remove(tmp)
		return Result{}, fmt.Errorf("write %s: %w", out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		_ = os.Remove(tmp)
		return Result{}, fmt.Errorf("write %s: %w", out, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return Result{}, fmt.Errorf("image %s: digest: %w", spec.Name, err)
	}
	id, err := img.ConfigName()
	if err != nil {
		return Result{}, fmt.Errorf("image %s: config digest: %w", spec.Name, err)
	}
	return Result{Name: tag.String(), Digest: digest, ImageID: id}, nil
}

// entry is one tar header and, for regular files, its content.
type entry struct {
	hdr  tar.Header
	data []byte
}

// layerTar writes the layer: every directory on the way to a file, then the
// files, sorted by path, with fixed times, owners and modes.
func layerTar(spec Spec) ([]byte, error) {
	entries := map[string]entry{}
	addDir := func(dir string) {
		for d := dir; d != "/"; d = path.Dir(d) {
			if _, ok := entries[d]; ok {
				continue
			}
			mode := int64(dirMode)
			if d == "/tmp" {
				mode = 0o1777
			}
			entries[d] = entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: mode}}
		}
	}
	for _, f := range spec.Files {
		p := path.Clean(f.Path)
		if !path.IsAbs(f.Path) || p != f.Path || p == "/" {
			return nil, fmt.Errorf("file path %q: want a clean absolute path", f.Path)
		}
		if _, dup := entries[p]; dup {
			return nil, fmt.Errorf("file path %q: listed twice", p)
		}
		addDir(path.Dir(p))
		name := strings.TrimPrefix(p, "/")
		switch {
		case f.Link != "" && f.Src == "":
			entries[p] = entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: f.Link, Mode: 0o777}}
		case f.Src != "" && f.Link == "":
			data, err := readInput(f, spec.Forbid)
			if err != nil {
				return nil, err
			}
			if f.Mode&^fs.ModePerm != 0 || f.Mode == 0 {
				return nil, fmt.Errorf("file %s: mode %v: want permission bits only", p, f.Mode)
			}
			entries[p] = entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(f.Mode), Size: int64(len(data))}, data: data}
		default:
			return nil, fmt.Errorf("file %s: want exactly one of Src and Link", p)
		}
	}
	// /tmp exists in every image: Go's os.TempDir and shells expect it.
	addDir("/tmp")

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range slices.Sorted(maps.Keys(entries)) {
		e := entries[p]
		e.hdr.ModTime = spec.Created.UTC().Truncate(time.Second)
		e.hdr.Format = tar.FormatUSTAR
		// Uid, Gid 0 and empty Uname, Gname: root, by number only.
		if err := tw.WriteHeader(&e.hdr); err != nil {
			return nil, fmt.Errorf("tar header %s: %w", p, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}
	return buf.Bytes(), nil
}

// readInput reads a regular file's source and checks it.
func readInput(f File, forbid []string) ([]byte, error) {
	data, err := os.ReadFile(f.Src)
	if err != nil {
		return nil, fmt.Errorf("file %s: %w", f.Path, err)
	}
	if f.Static {
		if err := checkStatic(data); err != nil {
			return nil, fmt.Errorf("file %s from %s: %w", f.Path, f.Src, err)
		}
	}
	for _, s := range forbid {
		if f.Trimmed && s != "" && bytes.Contains(data, []byte(s)) {
			return nil, fmt.Errorf("file %s from %s contains the build path %q (built without -trimpath?)", f.Path, f.Src, s)
		}
	}
	return data, nil
}
