package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// readiness is what /readyz reports: all three must hold, and no conflict.
type readiness struct {
	leaseHeld atomic.Bool
	subnetEnv atomic.Bool
	planes    atomic.Pointer[[]*plane] // set once the devices exist
	conflict  atomic.Pointer[string]   // set when another node took our lease
	blocked   atomic.Pointer[string]   // set while a firewall drops pod traffic
}

func (r *readiness) ready() (bool, string) {
	if c := r.conflict.Load(); c != nil {
		return false, *c
	}
	if b := r.blocked.Load(); b != nil {
		return false, *b
	}
	switch {
	case !r.leaseHeld.Load():
		return false, "lease not held"
	case !r.subnetEnv.Load():
		return false, "subnet.env not written"
	case r.planes.Load() == nil:
		return false, "datapath not programmed"
	}
	for _, p := range *r.planes.Load() {
		if !p.dp.Ready() {
			return false, p.family() + " datapath not programmed"
		}
	}
	return true, "ok"
}

// readyz is what /readyz and Ready report. While the lease was never held
// and etcd does not answer, the reason says so ("etcd unreachable: <endpoints>:
// <cause>") rather than "lease not held". Once the lease is held an etcd
// outage leaves the node ready: the datapath keeps serving; weft_etcd_up shows it.
func (a *Agent) readyz() (bool, string) {
	ok, why := a.ready.ready()
	if !ok && !a.ready.leaseHeld.Load() && a.ready.conflict.Load() == nil {
		if down := a.metrics.etcdDown(); down != "" {
			return false, down
		}
	}
	return ok, why
}

func (a *Agent) handler(metrics bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := a.readyz()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = fmt.Fprintln(w, why)
	})
	if metrics {
		mux.Handle("/metrics", promhttp.HandlerFor(a.metrics.Registry, promhttp.HandlerOpts{}))
	}
	return mux
}

// serve listens on addr and serves h until ctx ends.
func serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("serving http", "addr", ln.Addr().String())
	err = srv.Serve(ln)
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serve %s: %w", addr, err)
}

func hostPort(ip string, port int) string {
	return net.JoinHostPort(ip, strconv.Itoa(port))
}
