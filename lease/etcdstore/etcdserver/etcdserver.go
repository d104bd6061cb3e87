// Package etcdserver runs a single-member etcd server (go.etcd.io/etcd/server/v3
// embed) inside the calling process: the `weft-etcd` binary, which `weftd run`
// starts as a child when it has no --etcd-endpoints, and the tests' etcdtest
// helpers.
//
// It is a package of its own, outside etcdstore, so that weftd does not link
// the etcd server. Linked in, the server's packages (raft, bbolt, the gRPC
// gateway, OpenTelemetry) make weftd's binary markedly larger and keep more of
// it resident in every agent, whether or not the server runs (`make bench`'s
// idle figure shows the RSS). This package and etcdstore are the only ones
// that import go.etcd.io.
package etcdserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Config describes a single-member etcd server run inside the process.
type Config struct {
	// Dir holds the data (required).
	Dir string
	// ClientURLs to listen on (default http://127.0.0.1:0: a free port;
	// Endpoints reports the real one). Use https:// URLs with TLS.
	ClientURLs []string
	// PeerURL for the raft peer listener (default http://127.0.0.1:0).
	PeerURL string
	// Logger receives a one-line start message; etcd's own logging stays at
	// error level on stderr.
	Logger *slog.Logger
	// TLS, when set, serves the client URLs with this certificate.
	TLS *TLS
	// NoFsync skips fsync (faster, loses data on a crash): tests only.
	NoFsync bool
	// StartTimeout bounds the wait for the server to be ready (default 10s).
	StartTimeout time.Duration
}

// TLS is the server side of client TLS.
type TLS struct {
	CertFile, KeyFile string
	// CAFile verifies client certificates. etcd then requires them, so
	// leave it empty to serve CA-only (server-verified) clients.
	CAFile         string
	ClientCertAuth bool
}

// Server is a running etcd server.
type Server struct {
	etcd      *embed.Etcd
	endpoints []string
	closing   *atomic.Bool
}

// Start starts the server and waits until it serves requests.
func Start(ctx context.Context, c Config) (*Server, error) {
	closing := new(atomic.Bool)
	cfg, err := c.embedConfig(closing)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	start := time.Now()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", c.Dir, err)
	}
	timeout := c.StartTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		closing.Store(true)
		e.Close()
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	case <-ctx.Done():
		closing.Store(true)
		e.Close()
		return nil, fmt.Errorf("start embedded etcd: %w", ctx.Err())
	case <-t.C:
		closing.Store(true)
		e.Close()
		return nil, fmt.Errorf("start embedded etcd: not ready after %s", timeout)
	}
	em := &Server{etcd: e, closing: closing}
	scheme := "http"
	if c.TLS != nil {
		scheme = "https"
	}
	for _, l := range e.Clients {
		em.endpoints = append(em.endpoints, scheme+"://"+l.Addr().String())
	}
	if c.Logger != nil {
		c.Logger.Info("embedded etcd ready", "endpoints", em.endpoints, "dir", c.Dir, "took", time.Since(start).Round(time.Millisecond))
	}
	return em, nil
}

func (c Config) embedConfig(closing *atomic.Bool) (*embed.Config, error) {
	if c.Dir == "" {
		return nil, errors.New("no data directory")
	}
	cfg := embed.NewConfig()
	cfg.Dir = c.Dir
	cfg.Name = "weft"
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(quietZap(closing))
	cfg.UnsafeNoFsync = c.NoFsync
	urls := c.ClientURLs
	if len(urls) == 0 {
		scheme := "http"
		if c.TLS != nil {
			scheme = "https"
		}
		urls = []string{scheme + "://127.0.0.1:0"}
	}
	cu, err := parseURLs(urls)
	if err != nil {
		return nil, fmt.Errorf("client URLs: %w", err)
	}
	peer := c.PeerURL
	if peer == "" {
		peer = "http://127.0.0.1:0"
	}
	pu, err := parseURLs([]string{peer})
	if err != nil {
		return nil, fmt.Errorf("peer URL: %w", err)
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = cu, cu
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = pu, pu
	cfg.InitialCluster = cfg.Name + "=" + pu[0].String()
	if c.TLS != nil {
		cfg.ClientTLSInfo = transport.TLSInfo{
			CertFile:       c.TLS.CertFile,
			KeyFile:        c.TLS.KeyFile,
			TrustedCAFile:  c.TLS.CAFile,
			ClientCertAuth: c.TLS.ClientCertAuth,
		}
	}
	return cfg, nil
}

func parseURLs(ss []string) ([]url.URL, error) {
	out := make([]url.URL, 0, len(ss))
	for _, s := range ss {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("%q is not a URL such as http://127.0.0.1:2379", s)
		}
		out = append(out, *u)
	}
	return out, nil
}

// quietZap logs etcd's errors to stderr, except during Close, when etcd
// reports every listener it shuts down as an error.
func quietZap(closing *atomic.Bool) *zap.Logger {
	enc := zapcore.NewConsoleEncoder(zap.NewProductionEncoderConfig())
	core := zapcore.NewCore(enc, zapcore.Lock(os.Stderr), zapcore.ErrorLevel)
	return zap.New(&closingCore{Core: core, closing: closing})
}

type closingCore struct {
	zapcore.Core
	closing *atomic.Bool
}

func (c *closingCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.closing.Load() {
		return ce
	}
	return c.Core.Check(e, ce)
}

func (c *closingCore) With(f []zapcore.Field) zapcore.Core {
	return &closingCore{Core: c.Core.With(f), closing: c.closing}
}

// Endpoints returns the client URLs with the real ports.
func (e *Server) Endpoints() []string { return append([]string(nil), e.endpoints...) }

// Close stops the server and waits for it.
func (e *Server) Close() error {
	e.closing.Store(true)
	e.etcd.Close()
	return nil
}
