package etcdtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/lease/etcdstore/etcdserver"
)

// Restartable is an etcd server a test stops and starts again: same data
// directory, same client URL, so its clients reconnect to it and find their
// keys, leases and revisions. It is created stopped; Start starts it. It is
// stopped in t.Cleanup.
type Restartable struct {
	tb     testing.TB
	kind   string // "embedded" or "etcd-binary"
	dir    string
	client string // http://127.0.0.1:port
	peer   string

	mu   sync.Mutex
	stop func() // nil while stopped
}

// NewEmbedded returns a stopped embedded server on fresh ports.
func NewEmbedded(tb testing.TB) *Restartable {
	tb.Helper()
	return newRestartable(tb, "embedded")
}

// NewBinary returns a stopped etcd-binary server on fresh ports; it skips the
// test when etcd is not installed.
func NewBinary(tb testing.TB) *Restartable {
	tb.Helper()
	if !HaveBinary() {
		tb.Skip("etcd binary not installed (apt-get install etcd-server)")
	}
	return newRestartable(tb, "etcd-binary")
}

func newRestartable(tb testing.TB, kind string) *Restartable {
	r := &Restartable{tb: tb, kind: kind, dir: filepath.Join(tb.TempDir(), "etcd"),
		client: "http://" + FreeAddr(tb), peer: "http://" + FreeAddr(tb)}
	tb.Cleanup(r.Stop)
	return r
}

// Kind is "embedded" or "etcd-binary".
func (r *Restartable) Kind() string { return r.kind }

// Endpoints is the client URL, the same across restarts.
func (r *Restartable) Endpoints() []string { return []string{r.client} }

// Start starts the server and waits until it answers; it fails the test if
// it cannot.
func (r *Restartable) Start() {
	r.tb.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stop != nil {
		r.tb.Fatal("etcd already running")
	}
	var err error
	if r.kind == "embedded" {
		err = r.startEmbedded()
	} else {
		err = r.startBinary()
	}
	if err != nil {
		r.tb.Fatalf("start %s etcd on %s: %v", r.kind, r.client, err)
	}
}

// Stop stops the server (no-op when stopped); the data stays.
func (r *Restartable) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stop != nil {
		r.stop()
		r.stop = nil
	}
}

func (r *Restartable) startEmbedded() error {
	e, err := etcdserver.Start(context.Background(), etcdserver.Config{
		Dir: r.dir, ClientURLs: []string{r.client}, PeerURL: r.peer, NoFsync: true,
	})
	if err != nil {
		return err
	}
	r.stop = func() { _ = e.Close() }
	return nil
}

func (r *Restartable) startBinary() error {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		return err
	}
	stop, err := runBinary(bin, r.dir, r.client, r.peer)
	if err != nil {
		return err
	}
	r.stop = stop
	return nil
}

// runBinary starts the etcd binary on dir with the given URLs and waits until
// it answers; stop ends it (SIGTERM, then SIGKILL after 5 s) and waits.
func runBinary(bin, dir, client, peer string) (stop func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	cmd := exec.Command(bin,
		"--name", "weft-test", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "weft-test="+peer,
		"--logger", "zap", "--log-level", "error")
	logf, err := os.OpenFile(filepath.Join(dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create log file: %w", err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	// done is closed when the process has been waited for; exited hands its
	// error to waitReady once. stop must not wait on exited: waitReady may
	// have taken the value already (etcd exits at once on a busy port).
	done, exited := make(chan struct{}), make(chan error, 1)
	go func() {
		err := cmd.Wait()
		close(done)
		exited <- err
	}()
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	if err := waitReady(client, exited); err != nil {
		stop()
		out, _ := os.ReadFile(logf.Name())
		return nil, fmt.Errorf("etcd on %s: %w; log:\n%s", client, err, out)
	}
	return stop, nil
}
