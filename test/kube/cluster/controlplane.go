package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// startControlPlane starts weft-etcd, kube-apiserver, kube-controller-manager
// and kube-scheduler in the control-plane namespace and waits until the
// apiserver is ready.
func (c *Cluster) startControlPlane(ctx context.Context) error {
	var err error
	if c.pki, err = newPKI(filepath.Join(c.dir, "pki"), CPIP.AsSlice(), KubernetesServiceIP.AsSlice()); err != nil {
		return err
	}
	if err := os.WriteFile(c.Kubeconfig(), c.pki.kubeconfig("https://"+net.JoinHostPort(CPIP.String(), "6443")), 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.pki.caPEM)
	c.api = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:     c.cp.DialContext,
			TLSClientConfig: &tls.Config{RootCAs: pool},
		},
	}

	etcdURL := "http://" + net.JoinHostPort(CPIP.String(), "2379")
	if err := c.startCP("weft-etcd", c.opts.EtcdBin,
		"--data-dir", filepath.Join(c.dir, "etcd"), "--client-url", etcdURL, "--log-format", "text"); err != nil {
		return err
	}
	if err := c.waitHTTP(ctx, "weft-etcd", etcdURL+"/health", 20*time.Second); err != nil {
		return err
	}
	p := c.pki.path
	if err := c.startCP("kube-apiserver", c.bin("kube-apiserver"),
		"--etcd-servers="+etcdURL,
		"--bind-address="+CPIP.String(), "--advertise-address="+CPIP.String(), "--secure-port=6443",
		"--cert-dir="+filepath.Join(c.dir, "pki", "apiserver"),
		"--tls-cert-file="+p("apiserver.crt"), "--tls-private-key-file="+p("apiserver.key"),
		"--service-cluster-ip-range="+dualList(ServiceCIDR, ServiceCIDR6),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p("sa.pub"), "--service-account-signing-key-file="+p("sa.key"),
		"--token-auth-file="+p("tokens.csv"),
		"--authorization-mode=AlwaysAllow", "--anonymous-auth=false", "--allow-privileged=true",
		// Else `kubectl exec` and `logs` resolve node names through DNS.
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--enable-priority-and-fairness=false", "--profiling=false",
	); err != nil {
		return err
	}
	if err := c.waitAPIServer(ctx, 60*time.Second); err != nil {
		return err
	}
	if err := c.startCP("kube-controller-manager", c.bin("kube-controller-manager"),
		"--kubeconfig="+c.Kubeconfig(), "--leader-elect=false",
		// No cloud, and weft (not the controller manager) hands out pod subnets.
		"--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route",
		"--allocate-node-cidrs=false", "--cluster-cidr="+dualList(PodCIDR, PodCIDR6),
		"--service-cluster-ip-range="+dualList(ServiceCIDR, ServiceCIDR6),
		"--service-account-private-key-file="+p("sa.key"), "--root-ca-file="+p("ca.crt"),
		"--use-service-account-credentials=false", "--bind-address=127.0.0.1", "--profiling=false",
	); err != nil {
		return err
	}
	return c.startCP("kube-scheduler", c.bin("kube-scheduler"),
		"--kubeconfig="+c.Kubeconfig(), "--leader-elect=false", "--bind-address=127.0.0.1", "--profiling=false")
}

// startCP starts a control-plane process in the control-plane namespace.
func (c *Cluster) startCP(name, bin string, args ...string) error {
	argv := append([]string{"nsenter", "--net=" + c.cp.Path, "--", bin}, args...)
	p, err := startProc(name, filepath.Join(c.dir, "logs", name+".log"), c.env, argv...)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.cpProcs = append(c.cpProcs, p)
	c.mu.Unlock()
	c.log.Info("started", "proc", name, "pid", p.PID())
	return nil
}

func (c *Cluster) cpProc(name string) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.cpProcs {
		if p.name == name {
			return p
		}
	}
	return nil
}

// waitHTTP polls url from the control-plane namespace until it answers 200.
func (c *Cluster) waitHTTP(ctx context.Context, name, url string, limit time.Duration) error {
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: c.cp.DialContext, DisableKeepAlives: true}}
	return c.poll(ctx, name, limit, func() (bool, string) {
		resp, err := hc.Get(url)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return resp.StatusCode == http.StatusOK, fmt.Sprintf("%s: %s", resp.Status, b)
	})
}

func (c *Cluster) waitAPIServer(ctx context.Context, limit time.Duration) error {
	return c.poll(ctx, "kube-apiserver", limit, func() (bool, string) {
		b, err := c.getRaw(ctx, "/readyz")
		if err != nil {
			return false, err.Error()
		}
		return strings.TrimSpace(string(b)) == "ok", string(b)
	})
}

// poll calls check every 100 ms until it reports done, the named process
// (when it is one of the control plane's) exits, or limit passes.
func (c *Cluster) poll(ctx context.Context, name string, limit time.Duration, check func() (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	why := "no answer"
	for {
		ok, msg := check()
		if ok {
			return nil
		}
		if msg != "" {
			why = msg
		}
		if p := c.cpProc(name); p != nil {
			if done, err := p.exited(); done {
				return fmt.Errorf("%s exited (%v):\n%s", name, err, p.logTail(30))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s (%s): %w", name, why, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// getRaw GETs path from the apiserver with the admin token.
func (c *Cluster) getRaw(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+net.JoinHostPort(CPIP.String(), "6443")+path, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.pki.token)
	resp, err := c.api.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: read body: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &APIError{Path: path, Status: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	return b, nil
}

// APIError is a non-200 answer of the apiserver.
type APIError struct {
	Path   string
	Status int
	Body   string
}

func (e *APIError) Error() string { return fmt.Sprintf("GET %s: %d: %s", e.Path, e.Status, e.Body) }

// IsNotFound reports whether err is the apiserver's 404.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}

// Get decodes the JSON the apiserver answers for path (e.g.
// "/api/v1/nodes") into out.
func (c *Cluster) Get(ctx context.Context, path string, out any) error {
	b, err := c.getRaw(ctx, path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("GET %s: decode: %w", path, err)
	}
	return nil
}
