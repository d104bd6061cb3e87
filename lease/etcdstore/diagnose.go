package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Why etcd does not answer. gRPC waits for a usable connection until the
// deadline and then reports only "context deadline exceeded"; the transport
// error it saw (refused, TLS handshake) stays inside it. So when an operation
// gets no answer, the store dials each endpoint itself, as the client would,
// and reports what went wrong: the TCP error, the TLS handshake error
// ("certificate signed by unknown authority", "first record does not look
// like a TLS handshake"), a client certificate the server refused, a server
// that speaks TLS to a plain-http endpoint, or, when all of that works, that
// etcd accepts connections but does not answer (no leader, overloaded).

// clientTLS remembers the TLS config NewClient gave each client, for the
// diagnosis; an entry goes when its client is closed.
var clientTLS sync.Map // *clientv3.Client -> *tls.Config

func rememberTLS(cli *clientv3.Client, cfg *tls.Config) {
	if cfg == nil {
		return
	}
	clientTLS.Store(cli, cfg)
	context.AfterFunc(cli.Ctx(), func() { clientTLS.Delete(cli) })
}

func tlsOf(cli *clientv3.Client) *tls.Config {
	if v, ok := clientTLS.Load(cli); ok {
		return v.(*tls.Config)
	}
	return nil
}

// diagnosis finds and caches the cause of a failure (one dial round at a time;
// a cause found within diagnoseReuse is reused).
type diagnosis struct {
	mu    sync.Mutex
	at    time.Time
	found string
}

// cause returns "<endpoint>: <what went wrong>" for every endpoint, joined
// with "; ". It takes up to diagnoseTimeout, also after ctx expired (a
// deadline that expired is what brought us here).
func (d *diagnosis) cause(ctx context.Context, cli *clientv3.Client) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.at.IsZero() && time.Since(d.at) < diagnoseReuse {
		return d.found
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), diagnoseTimeout)
	defer cancel()
	eps := cli.Endpoints()
	causes := make([]string, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Go(func() { causes[i] = ep + ": " + diagnoseEndpoint(dctx, ep, tlsOf(cli)) })
	}
	wg.Wait()
	d.found, d.at = strings.Join(causes, "; "), time.Now()
	return d.found
}

// diagnoseEndpoint dials ep the way the client does and says what fails.
func diagnoseEndpoint(ctx context.Context, ep string, cfg *tls.Config) string {
	u, err := url.Parse(ep)
	if err != nil || u.Host == "" {
		return fmt.Sprintf("not a URL such as https://127.0.0.1:2379 (%v)", err)
	}
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if u.Scheme == "https" {
		return diagnoseTLS(ctx, conn, u.Hostname(), cfg)
	}
	// Plain http: a server that completes a TLS handshake cannot be talked to.
	hctx, cancel := context.WithTimeout(ctx, diagnoseTimeout/2)
	defer cancel()
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, ServerName: u.Hostname(), NextProtos: []string{"h2"}}) //nolint:gosec // only asks whether the server speaks TLS
	if tc.HandshakeContext(hctx) == nil {
		return "the server speaks TLS but the endpoint is plain http: use https:// and --etcd-cafile"
	}
	return notAnswering
}

// diagnoseTLS does the client's handshake on conn, then sends the start of an
// HTTP/2 connection: with TLS 1.3 a client certificate the server refuses
// shows only on that first exchange.
func diagnoseTLS(ctx context.Context, conn net.Conn, host string, cfg *tls.Config) string {
	if cfg == nil {
		cfg = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // no config known: only checks the server speaks TLS
	} else {
		cfg = cfg.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	cfg.NextProtos = []string{"h2"}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		var rec tls.RecordHeaderError
		if errors.As(err, &rec) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return fmt.Sprintf("TLS handshake failed: %v: the server does not speak TLS (use http://)", err)
		}
		return "TLS handshake failed: " + err.Error()
	}
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	settings := []byte{0, 0, 0, 4, 0, 0, 0, 0, 0} // an empty SETTINGS frame
	if _, err := tc.Write(append([]byte(preface), settings...)); err != nil {
		return "TLS: " + err.Error()
	}
	var b [1]byte
	if _, err := tc.Read(b[:]); err != nil {
		var alert tls.AlertError
		if errors.As(err, &alert) || strings.Contains(err.Error(), "remote error") {
			return "TLS: the server refused the connection: " + err.Error()
		}
		if errors.Is(err, io.EOF) {
			return "TLS: the server closed the connection after the handshake (client certificate refused?)"
		}
	}
	return notAnswering
}

// notAnswering is the cause when the connection works: etcd itself does not answer.
const notAnswering = "accepts connections but etcd did not answer in time (no leader, overloaded, or not an etcd server)"
