package etcdstore

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
)

// ClientConfig is how weftd reaches etcd (flannel's --etcd-* flags).
type ClientConfig struct {
	// Endpoints are URLs such as https://10.0.0.1:2379. All must use the
	// same scheme: https needs CAFile; http must not have TLS files.
	Endpoints []string
	// CertFile and KeyFile are the client certificate (both or neither).
	CertFile, KeyFile string
	// CAFile verifies the server. CA-only (no client cert) is valid TLS.
	CAFile string
	// Username and Password enable etcd authentication (both or neither).
	Username, Password string
	// DialTimeout bounds connection set-up (default 5s).
	DialTimeout time.Duration
}

// ErrTLSMismatch: endpoints and TLS files disagree (https without a CA, or
// TLS files with http://). weft never falls back to plain http silently.
var ErrTLSMismatch = errors.New("etcd endpoints and TLS settings disagree")

// NewClient builds an etcd client. It does not wait for a connection (weftd
// keeps retrying while etcd is down); the first request reports a failure,
// after its deadline, with the cause the Store finds by dialling the
// endpoints with the same TLS settings (ErrUnreachable).
func NewClient(c ClientConfig) (*clientv3.Client, error) {
	tlsCfg, err := c.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("configure etcd client: %w", err)
	}
	if (c.Username == "") != (c.Password == "") {
		return nil, errors.New("configure etcd client: username and password go together")
	}
	dt := c.DialTimeout
	if dt <= 0 {
		dt = 5 * time.Second
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            c.Endpoints,
		TLS:                  tlsCfg,
		Username:             c.Username,
		Password:             c.Password,
		DialTimeout:          dt,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Logger:               zap.NewNop(),
		// gRPC's default reconnect backoff grows to 120 s: after an etcd
		// outage the watch would resume up to that backoff late, and new or
		// departed peers would go unnoticed that long. Retry at most every second.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: grpcbackoff.Config{
				BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second,
			},
			MinConnectTimeout: time.Second,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("create etcd client for %s: %w", strings.Join(c.Endpoints, ","), err)
	}
	rememberTLS(cli, tlsCfg) // for the diagnosis of a failure (diagnose.go)
	return cli, nil
}

// tlsConfig checks the endpoints against the TLS files and loads them.
func (c ClientConfig) tlsConfig() (*tls.Config, error) {
	if len(c.Endpoints) == 0 {
		return nil, errors.New("no etcd endpoints")
	}
	hasTLS := c.CertFile != "" || c.KeyFile != "" || c.CAFile != ""
	for _, ep := range c.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("endpoint %q: want a URL such as https://127.0.0.1:2379", ep)
		}
		switch u.Scheme {
		case "https":
			if c.CAFile == "" {
				return nil, fmt.Errorf("endpoint %s is https but no CA file is set (--etcd-cafile): %w", ep, ErrTLSMismatch)
			}
		case "http":
			if hasTLS {
				return nil, fmt.Errorf("endpoint %s is plain http but TLS files are set: use https:// so they are used: %w", ep, ErrTLSMismatch)
			}
		default:
			return nil, fmt.Errorf("endpoint %q: scheme must be http or https", ep)
		}
	}
	if !hasTLS {
		return nil, nil
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("client certificate and key go together (--etcd-certfile, --etcd-keyfile)")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	cfg.RootCAs = x509.NewCertPool()
	if !cfg.RootCAs.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("read CA file %s: no PEM certificate in it", c.CAFile)
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
