// Command image writes weft's container images as docker-archive tarballs
// with go-containerregistry: no Docker engine, no registry, one layer.
//
//	go run ./test/image weft -o bin/weft-image.tar -name localhost/weft:v1 \
//	    -weftd bin/weftd -weft bin/weft -portmap bin/portmap -busybox /bin/busybox
//	go run ./test/image pause -o bin/pause-image.tar -name localhost/pause:v1 -pause bin/pause
//	go run ./test/image testpod -o bin/weft-testpod-image.tar -name localhost/weft-testpod:v1 \
//	    -testpod bin/testpod -busybox /bin/busybox
//	go run ./test/image coredns -o bin/coredns-image.tar -name localhost/coredns:v1.15.0 -coredns <dir>/coredns
//
// The images are reproducible: entries sorted, owned by 0:0 with fixed modes,
// every time (file times, config and history Created) set to -created
// (default $SOURCE_DATE_EPOCH, else 0), so the same inputs give the same
// digest. It prints "<tarball> <name> <manifest digest> (image ID <config
// digest>)". `ctr images import` of a docker archive writes a manifest of its
// own, so containerd lists another digest; the image ID (what crictl shows)
// stays.
package main

import (
	"errors"
	"flag"
	"fmt"
	"go/build"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

const usage = "usage: image weft|pause|testpod|coredns -o FILE -name REF [-created UNIX] [inputs]"

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	kind := args[0]
	fs := flag.NewFlagSet(kind, flag.ContinueOnError)
	out := fs.String("o", "", "docker-archive tarball to write")
	ref := fs.String("name", "", "fully qualified image name with a tag, e.g. localhost/weft:v1")
	created := fs.Int64("created", defaultEpoch(), "Unix time of every file and of the config (default $SOURCE_DATE_EPOCH, else 0)")
	weftd := fs.String("weftd", "", "weftd binary (weft)")
	weft := fs.String("weft", "", "weft CNI plugin binary (weft)")
	portmap := fs.String("portmap", "", "portmap CNI plugin binary (weft)")
	bb := fs.String("busybox", "/bin/busybox", "static busybox (weft, testpod)")
	pause := fs.String("pause", "", "pause binary (pause)")
	testpod := fs.String("testpod", "", "testpod binary (testpod)")
	coredns := fs.String("coredns", "", "coredns binary (coredns)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q\n%s", fs.Args(), usage)
	}
	if *out == "" || *ref == "" {
		return fmt.Errorf("-o and -name are required\n%s", usage)
	}
	when := time.Unix(*created, 0).UTC()
	forbid := buildPaths()

	var spec Spec
	need := func(flagName, v string) error {
		if v == "" {
			return fmt.Errorf("%s image: -%s is required", kind, flagName)
		}
		return nil
	}
	switch kind {
	case "weft":
		if err := errors.Join(need("weftd", *weftd), need("weft", *weft), need("portmap", *portmap), need("busybox", *bb)); err != nil {
			return err
		}
		spec = weftSpec(*ref, weftInputs{Weftd: *weftd, Weft: *weft, Portmap: *portmap, Busybox: *bb}, when, forbid)
	case "pause":
		if err := need("pause", *pause); err != nil {
			return err
		}
		spec = pauseSpec(*ref, *pause, when, forbid)
	case "testpod":
		if err := errors.Join(need("testpod", *testpod), need("busybox", *bb)); err != nil {
			return err
		}
		spec = testpodSpec(*ref, *testpod, *bb, when, forbid)
	case "coredns":
		if err := need("coredns", *coredns); err != nil {
			return err
		}
		spec = corednsSpec(*ref, *coredns, when)
	default:
		return fmt.Errorf("unknown image %q\n%s", kind, usage)
	}

	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	res, err := Write(spec, *out)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s %s %s (image ID %s)\n", *out, res.Name, res.Digest, res.ImageID)
	return err
}

// defaultEpoch is $SOURCE_DATE_EPOCH (the reproducible-builds convention),
// or 0 when it is unset or not a number.
func defaultEpoch() int64 {
	n, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// buildPaths are the absolute paths a binary built without -trimpath
// carries: the working directory (the module root under make) and the
// module cache.
func buildPaths() []string {
	var paths []string
	if wd, err := os.Getwd(); err == nil && wd != "/" {
		paths = append(paths, wd)
	}
	return append(paths, filepath.Join(build.Default.GOPATH, "pkg", "mod"))
}
