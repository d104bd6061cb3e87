package kube

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/weftnet/weft/test/kube/cluster"
)

// Images the tier builds (test/image) besides the weft image under test.
const (
	pauseImage   = "localhost/weft-tier/pause:1"
	testpodImage = "localhost/weft-tier/testpod:1"
	corednsImage = "localhost/weft-tier/coredns:1"
)

// env is what TestMain prepared; skip says why the tier does not run.
var env struct {
	skip      string
	buildDir  string   // removed at exit
	kubeBin   string   // WEFT_KUBE_BIN
	weftImage string   // WEFT_IMAGE
	etcdBin   string   // weft-etcd built from this checkout
	images    []string // tarballs imported into every node
}

func TestMain(m *testing.M) {
	flag.Parse()
	env.kubeBin, env.weftImage = os.Getenv("WEFT_KUBE_BIN"), os.Getenv("WEFT_IMAGE")
	switch {
	case testing.Short():
		env.skip = "kube tier skipped with -short"
	case os.Geteuid() != 0:
		env.skip = "kube tier needs root"
	case env.kubeBin == "" || env.weftImage == "":
		env.skip = "kube tier needs WEFT_KUBE_BIN (make kube-bins) and WEFT_IMAGE (make image); run make test-kube"
	}
	if env.skip != "" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "weft-kube-build-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube:", err)
		os.Exit(1)
	}
	env.buildDir = dir
	if err := prepare(dir); err != nil {
		fmt.Fprintln(os.Stderr, "kube:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	stop := closeClustersOnSignal()
	code := m.Run()
	stop()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// prepare builds weft-etcd, the pause and testpod binaries and the images
// of pause, testpod and CoreDNS (with test/image, as `make image` builds
// weft's) into dir.
func prepare(dir string) error {
	for _, b := range []struct{ out, pkg string }{
		{"weft-etcd", "./cmd/weft-etcd"},
		{"pause", "./test/kube/pause"},
		{"testpod", "./test/kube/testpod"},
		{"image", "./test/image"},
	} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd.Dir = filepath.Join("..", "..")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w: %s", b.pkg, err, out)
		}
	}
	env.etcdBin = filepath.Join(dir, "weft-etcd")
	for _, img := range [][]string{
		{"pause", "-name", pauseImage, "-pause", filepath.Join(dir, "pause")},
		{"testpod", "-name", testpodImage, "-testpod", filepath.Join(dir, "testpod"), "-busybox", "/bin/busybox"},
		{"coredns", "-name", corednsImage, "-coredns", filepath.Join(env.kubeBin, "coredns")},
	} {
		out := filepath.Join(dir, img[0]+".tar")
		args := append([]string{img[0], "-o", out}, img[1:]...)
		cmd := exec.Command(filepath.Join(dir, "image"), args...)
		cmd.Dir = filepath.Join("..", "..")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("image %s: %w: %s", strings.Join(args, " "), err, b)
		}
		env.images = append(env.images, out)
	}
	env.images = append(env.images, env.weftImage)
	return nil
}

// openClusters are closed if the test binary gets SIGINT or SIGTERM, since
// t.Cleanup does not run then.
var openClusters sync.Map // *cluster.Cluster → struct{}

func closeClustersOnSignal() (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-quit:
			return
		case sig := <-sigs:
			var errs []error
			openClusters.Range(func(k, _ any) bool {
				errs = append(errs, k.(*cluster.Cluster).Close())
				return true
			})
			_ = os.RemoveAll(env.buildDir)
			fmt.Fprintf(os.Stderr, "kube: %v: clusters removed (%v)\n", sig, errors.Join(errs...))
			os.Exit(130)
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(quit)
		<-done
	}
}
