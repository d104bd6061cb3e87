package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// etcdServerBinary is the single-member etcd weftd starts without
// --etcd-endpoints (cmd/weft-etcd; the server is not linked into weftd).
const etcdServerBinary = "weft-etcd"

// errEtcdExited ends `weftd run` when the etcd it started exits.
var errEtcdExited = errors.New(etcdServerBinary + " exited")

// etcdChild is a weft-etcd process started by weftd.
type etcdChild struct {
	cmd       *exec.Cmd
	endpoints []string
	exited    chan struct{} // closed once the process is reaped
	err       error         // its exit status, set before exited closes
}

// findEtcdServer looks for weft-etcd next to the running weftd, then in PATH.
func findEtcdServer() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), etcdServerBinary)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath(etcdServerBinary)
	if err != nil {
		return "", fmt.Errorf("no --etcd-endpoints and no %s next to weftd or in PATH: give the endpoints of an etcd or install %s", etcdServerBinary, etcdServerBinary)
	}
	return p, nil
}

// startEtcdChild starts weft-etcd with args, with its logs on stderr, and
// waits until it reports its endpoints on stdout (it does once the server
// answers). The child gets SIGTERM if weftd dies.
func startEtcdChild(ctx context.Context, log *slog.Logger, stderr io.Writer, args ...string) (*etcdChild, error) {
	bin, err := findEtcdServer()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", etcdServerBinary, err)
	}
	defer r.Close()
	c := &etcdChild{exited: make(chan struct{})}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Stdout, c.cmd.Stderr = w, stderr
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that forked the child exits, not
		// the process: this goroutine keeps that thread to itself until the
		// child is reaped, and the thread ends with it.
		runtime.LockOSThread()
		if err := c.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	err = <-started
	_ = w.Close() // the child has its copy; EOF on r now means it exited
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	lines := make(chan string, 1)
	go func() {
		defer close(lines)
		if line, err := bufio.NewReader(r).ReadString('\n'); err == nil {
			lines <- strings.TrimSpace(line)
		}
	}()
	const startTimeout = 30 * time.Second
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	var line string
	var ok bool
	select {
	case line, ok = <-lines:
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = fmt.Errorf("not ready after %s", startTimeout)
	}
	if err == nil && !ok {
		<-c.exited
		err = fmt.Errorf("exited before it was ready (%v); its log is above", c.err)
	}
	if err != nil {
		c.stop(log)
		_ = r.Close() // ends the reader goroutine
		<-lines
		return nil, fmt.Errorf("%s: %w", bin, err)
	}
	c.endpoints = strings.Split(line, ",")
	log.Info("started etcd", "binary", bin, "pid", c.cmd.Process.Pid, "endpoints", c.endpoints, "args", args)
	return c, nil
}

// stop ends the child (SIGTERM, SIGKILL after 10 s) and waits for it.
func (c *etcdChild) stop(log *slog.Logger) {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-c.exited:
	case <-t.C:
		log.Warn("etcd did not stop within 10s: killing it", "pid", c.cmd.Process.Pid)
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	if c.err != nil {
		log.Warn("etcd stopped", "pid", c.cmd.Process.Pid, "err", c.err)
	}
}
