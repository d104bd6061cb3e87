// Package etcdtest starts real etcd servers for tests: the embedded server
// (Start, StartTLS) and the Debian etcd binary as a child process
// (StartBinary). Every server listens on 127.0.0.1 on free ports, keeps its
// data in t.TempDir() and is stopped in t.Cleanup, also when the test fails.
// Restartable is one a test can stop and start again on the same data and URL.
// Proxy sits between a client and a server so that a test can cut the
// connection (an etcd outage for one client only).
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/weftnet/weft/lease/etcdstore"
	"github.com/weftnet/weft/lease/etcdstore/etcdserver"
)

// Start runs an embedded etcd and returns its client endpoints.
func Start(tb testing.TB) []string {
	tb.Helper()
	return start(tb, nil)
}

func start(tb testing.TB, tlsCfg *etcdserver.TLS) []string {
	tb.Helper()
	e, err := etcdserver.Start(context.Background(), etcdserver.Config{
		Dir:     filepath.Join(tb.TempDir(), "etcd"),
		TLS:     tlsCfg,
		NoFsync: true,
	})
	if err != nil {
		tb.Fatalf("start embedded etcd: %v", err)
	}
	tb.Cleanup(func() { _ = e.Close() })
	return e.Endpoints()
}

// StartTLS runs an embedded etcd serving https with a CA, server and client
// certificate made for this test. With clientCertRequired the server demands
// a client certificate signed by the CA; otherwise CA-only clients work.
func StartTLS(tb testing.TB, clientCertRequired bool) ([]string, TLSFiles) {
	tb.Helper()
	certs := WriteCerts(tb, tb.TempDir())
	srv := &etcdserver.TLS{CertFile: certs.ServerCertFile, KeyFile: certs.ServerKeyFile}
	if clientCertRequired {
		// etcd demands client certificates as soon as it has a trusted CA.
		srv.CAFile, srv.ClientCertAuth = certs.CAFile, true
	}
	eps := start(tb, srv)
	return eps, certs
}

// HaveBinary reports whether the etcd binary is installed.
func HaveBinary() bool {
	_, err := exec.LookPath("etcd")
	return err == nil
}

// StartBinary runs the installed etcd binary (Debian's etcd 3.4) as a child
// process and returns its client endpoint. It skips the test when etcd is
// not installed.
func StartBinary(tb testing.TB) []string {
	tb.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		tb.Skip("etcd binary not installed (apt-get install etcd-server)")
	}
	var lastErr error
	for range 3 { // a free port can be taken between probe and bind: retry
		ep, err := startBinary(tb, bin)
		if err == nil {
			return []string{ep}
		}
		lastErr = err
	}
	tb.Fatalf("start etcd binary: %v", lastErr)
	return nil
}

func startBinary(tb testing.TB, bin string) (string, error) {
	client, peer := "http://"+FreeAddr(tb), "http://"+FreeAddr(tb)
	stop, err := runBinary(bin, tb.TempDir(), client, peer)
	if err != nil {
		return "", err
	}
	tb.Cleanup(stop)
	return client, nil
}

// waitReady polls the endpoint until a read succeeds, the process exits or 15s pass.
func waitReady(ep string, exited <-chan error) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("exited early: %v", err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err = cli.Get(ctx, "/weft-ready-probe")
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("not ready after 15s: " + fmt.Sprint(err))
}

// FreeAddr returns a 127.0.0.1:port that was free a moment ago.
//
// The port is below Linux's ephemeral range (32768-60999): a port the kernel
// handed out for :0 is also what it hands out as the source port of outgoing
// connections, and the many client connections of tests running in parallel
// then take it before a server that starts later (a restartable etcd started
// seconds after its URL was chosen) can bind it ("address already in use").
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	for range 100 {
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		_ = l.Close()
		return "127.0.0.1:" + strconv.Itoa(port)
	}
	tb.Fatal("find a free port in 20000-31999: 100 tries failed")
	return ""
}

// Client returns a client for endpoints, closed in t.Cleanup.
func Client(tb testing.TB, endpoints []string) *clientv3.Client {
	tb.Helper()
	cli, err := etcdstore.NewClient(etcdstore.ClientConfig{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		tb.Fatalf("etcd client: %v", err)
	}
	tb.Cleanup(func() { _ = cli.Close() })
	return cli
}
