package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/lease/etcdstore"
	"github.com/weftnet/weft/lease/etcdstore/etcdtest"
)

// healthRec records the WithHealth hook's calls.
type healthRec struct {
	mu    sync.Mutex
	calls []healthCall
	ch    chan healthCall
}

type healthCall struct {
	up  bool
	err error
	at  time.Time
}

func newHealthRec() *healthRec { return &healthRec{ch: make(chan healthCall, 100)} }

func (r *healthRec) hook(up bool, err error) {
	c := healthCall{up, err, time.Now()}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	r.ch <- c
}

// next waits up to limit for the next call.
func (r *healthRec) next(t *testing.T, limit time.Duration) healthCall {
	t.Helper()
	select {
	case c := <-r.ch:
		return c
	case <-time.After(limit):
		t.Fatalf("no health change within %s (calls so far: %v)", limit, r.sequence())
	}
	return healthCall{}
}

// sequence renders the calls as "down up ...".
func (r *healthRec) sequence() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []string
	for _, c := range r.calls {
		s = append(s, map[bool]string{true: "up", false: "down"}[c.up])
	}
	return strings.Join(s, " ")
}

// monitor runs s.Monitor until the test ends.
func monitor(t *testing.T, s *etcdstore.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Monitor(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// etcd is not there when the store starts. A warning that
// names the endpoint and the error comes within 5 s (the monitor's first probe),
// once (the next would be 30 s later); when etcd starts, a line says so and the
// hook goes up.
func TestUnreachableAtStartIsReportedThenConnected(t *testing.T) {
	eachRestartable(t, func(t *testing.T, r *etcdtest.Restartable) {
		ep := r.Endpoints()[0]
		logs := &syncBuffer{}
		rec := newHealthRec()
		s := etcdstore.New(etcdtest.Client(t, r.Endpoints()), "", slogText(logs), etcdstore.WithHealth(rec.hook))
		start := time.Now()
		monitor(t, s)
		down := rec.next(t, 30*time.Second)
		if took := down.at.Sub(start); down.up || took >= 5*time.Second {
			t.Errorf("first report %+v after %s, want down within 5s", down, took)
		}
		if !errors.Is(down.err, etcdstore.ErrUnreachable) || !strings.Contains(down.err.Error(), ep) ||
			!strings.Contains(down.err.Error(), "connection refused") {
			t.Errorf("down error %v: want ErrUnreachable naming %s and the refused connection", down.err, ep)
		}
		waitLine(t, logs, "level=WARN", "etcd unreachable") // the hook is called just before the line is logged
		if n := countLines(logs.String(), "level=WARN", "etcd unreachable", ep, "connection refused"); n != 1 {
			t.Errorf("%d warnings naming the endpoint and the error, want 1:\n%s", n, logs)
		}
		time.Sleep(3 * time.Second) // several more failed probes: no more lines (one per 30 s)
		if n := countLines(logs.String(), "level=WARN"); n != 1 {
			t.Errorf("%d warnings in 3 s of outage, want 1:\n%s", n, logs)
		}
		r.Start()
		if up := rec.next(t, 30*time.Second); !up.up {
			t.Fatalf("after etcd started: %+v, want up", up)
		}
		waitLine(t, logs, "connected to etcd")
		if n := countLines(logs.String(), "level=INFO", "connected to etcd", ep); n != 1 {
			t.Errorf("%d 'connected to etcd' lines, want 1:\n%s", n, logs)
		}
		t.Logf("log:\n%s", logs)
	})
}

// A TLS setting that does not match the server is reported
// within 5 s, with the likely cause, by the monitor; the operation that failed
// returns ErrUnreachable with the same cause within 10 s.
func TestTLSMismatchNamesTheCause(t *testing.T) {
	tlsEp, certs := etcdtest.StartTLS(t, true)
	other := etcdtest.WriteCerts(t, t.TempDir())
	plainEmbedded := etcdtest.Start(t)[0]
	cases := []struct {
		name string
		cc   etcdstore.ClientConfig
		want string
	}{
		{"wrong CA", etcdstore.ClientConfig{Endpoints: tlsEp, CAFile: other.CAFile, CertFile: certs.CertFile, KeyFile: certs.KeyFile},
			"certificate signed by unknown authority"},
		{"no client certificate", etcdstore.ClientConfig{Endpoints: tlsEp, CAFile: certs.CAFile}, "certificate required"},
		{"http to a TLS server", etcdstore.ClientConfig{Endpoints: []string{strings.Replace(tlsEp[0], "https://", "http://", 1)}},
			"server speaks TLS"},
		{"https to the embedded plain server", etcdstore.ClientConfig{
			Endpoints: []string{strings.Replace(plainEmbedded, "http://", "https://", 1)}, CAFile: certs.CAFile}, "does not speak TLS"},
	}
	if etcdtest.HaveBinary() {
		plainBinary := etcdtest.StartBinary(t)[0]
		cases = append(cases, struct {
			name string
			cc   etcdstore.ClientConfig
			want string
		}{"https to the etcd binary (plain)", etcdstore.ClientConfig{
			Endpoints: []string{strings.Replace(plainBinary, "http://", "https://", 1)}, CAFile: certs.CAFile}, "does not speak TLS"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cli, err := etcdstore.NewClient(tc.cc)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cli.Close() })
			rec := newHealthRec()
			s := etcdstore.New(cli, "", testLogger(t), etcdstore.WithHealth(rec.hook))
			start := time.Now()
			monitor(t, s)
			down := rec.next(t, 30*time.Second)
			if took := down.at.Sub(start); down.up || took >= 5*time.Second || !strings.Contains(fmt.Sprint(down.err), tc.want) {
				t.Errorf("after %s: up=%v err=%v; want down within 5s naming %q", took, down.up, down.err, tc.want)
			}
			start = time.Now()
			_, err = s.NetworkConfig(tctx(t))
			if took := time.Since(start); !errors.Is(err, etcdstore.ErrUnreachable) || !strings.Contains(err.Error(), tc.want) || took >= 10*time.Second {
				t.Errorf("NetworkConfig after %s: %v; want ErrUnreachable naming %q within 10s", took, err, tc.want)
			}
			t.Logf("%v", err)
		})
	}
}

// waitLine waits up to 5 s for a log line containing every one of subs.
func waitLine(t *testing.T, logs *syncBuffer, subs ...string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); countLines(logs.String(), subs...) == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q:\n%s", subs, logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// blackHole accepts TCP connections and never answers: a hung etcd.
func blackHole(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return "http://" + ln.Addr().String()
}

// Every call has a deadline: against an etcd that accepts connections and
// never answers, each Store method returns ErrUnreachable within the
// operation timeout (plus the diagnosis), saying that etcd does not answer;
// KeepAlive and Watch do not return early but stop with their context.
func TestEveryCallHasADeadline(t *testing.T) {
	const opTimeout = time.Second
	ep := blackHole(t)
	cli := etcdtest.Client(t, []string{ep})
	s := etcdstore.New(cli, "", testLogger(t), etcdstore.WithTimeouts(opTimeout, 0, 0))
	l := lease.Lease{Subnet: mustPrefix("10.244.1.0/24"), Attrs: attrs("198.18.0.1", "a"), LeaseID: 1, Expiration: time.Now().Add(time.Hour)}
	limit := opTimeout + 3*time.Second // the diagnosis takes up to 2 s
	for name, call := range map[string]func(ctx context.Context) error{
		"NetworkConfig": func(ctx context.Context) error { _, err := s.NetworkConfig(ctx); return err },
		"PutConfig":     func(ctx context.Context) error { return s.PutConfig(ctx, []byte(testConfig)) },
		"List":          func(ctx context.Context) error { _, err := s.List(ctx); return err },
		"Inspect":       func(ctx context.Context) error { _, err := s.Inspect(ctx); return err },
		"Acquire": func(ctx context.Context) error {
			_, err := s.Acquire(ctx, testNetwork, req("198.18.0.1", "a"))
			return err
		},
		"Release": func(ctx context.Context) error { return s.Release(ctx, l) },
	} {
		start := time.Now()
		err := call(tctx(t)) // the caller's context has no short deadline
		took := time.Since(start)
		if !errors.Is(err, etcdstore.ErrUnreachable) || !strings.Contains(err.Error(), "did not answer") || took > limit {
			t.Errorf("%s: %v after %s; want ErrUnreachable saying etcd did not answer within %s", name, err, took, limit)
		}
	}
	// The long-running loops keep retrying and end with their context.
	ctx, cancel := context.WithTimeout(tctx(t), 3*opTimeout)
	defer cancel()
	w, err := s.Watch(ctx)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if err := s.KeepAlive(ctx, l); err != nil {
		t.Errorf("KeepAlive: %v", err)
	}
	select {
	case b, ok := <-w:
		if ok {
			t.Errorf("watch batch from a hung etcd: %+v", b)
		}
	case <-time.After(10 * time.Second):
		t.Error("watch channel not closed 10s after its context ended")
	}
}

// An outage while a watch and a keepalive run. The
// monitor reports it within 10 s (default timings), with one warning, and the
// recovery with one line; neither loop logs on its own or spins; afterwards
// the keepalive still renews the same etcd lease and a lease added during the
// outage reaches the watcher within 5 s of etcd's return.
func TestOutageReportedOnceAndRecovered(t *testing.T) {
	eachRestartable(t, func(t *testing.T, r *etcdtest.Restartable) {
		r.Start()
		cli, s := setup(t, r.Endpoints(), testConfig)
		own, err := acquire(tctx(t), s, req("198.18.0.1", "own"))
		if err != nil {
			t.Fatal(err)
		}
		logs := &syncBuffer{}
		rec := newHealthRec()
		var opsMu sync.Mutex
		ops := 0
		as := etcdstore.New(etcdtest.Client(t, r.Endpoints()), "", slogText(logs), etcdstore.WithHealth(rec.hook),
			etcdstore.WithObserver(func(string, time.Duration, error) { opsMu.Lock(); ops++; opsMu.Unlock() }))
		monitor(t, as)
		if c := rec.next(t, 30*time.Second); !c.up {
			t.Fatalf("first report %+v, want up", c)
		}
		ctx, cancel := context.WithCancel(tctx(t))
		kaDone := make(chan error, 1)
		go func() { kaDone <- as.KeepAlive(ctx, own) }()
		t.Cleanup(func() { cancel(); <-kaDone })
		w, err := as.Watch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := collect(t, w, 1); got[0] != "added "+own.Key() {
			t.Fatalf("snapshot %q", got)
		}

		stopped := time.Now()
		r.Stop()
		down := rec.next(t, 30*time.Second)
		if took := down.at.Sub(stopped); down.up || took >= 10*time.Second {
			t.Errorf("after the stop: up=%v after %s, want down within 10s", down.up, took)
		}
		opsMu.Lock()
		opsAtDown := ops
		opsMu.Unlock()
		time.Sleep(4 * time.Second) // the outage goes on
		opsMu.Lock()
		during := ops - opsAtDown
		opsMu.Unlock()
		if during > 20 { // probes every second, plus a few retries: not a spin
			t.Errorf("%d etcd operations in 4 s of outage: spinning", during)
		}
		r.Start()
		back := time.Now()
		if up := rec.next(t, 30*time.Second); !up.up {
			t.Fatalf("after the restart: %+v, want up", up)
		}
		added, err := acquire(tctx(t), s, req("198.18.0.2", "new")) // s's client reconnects on its own
		if err != nil {
			t.Fatal(err)
		}
		if got := collect(t, w, 1); got[0] != "added "+added.Key() {
			t.Fatalf("after the outage: %q", got)
		}
		if took := time.Since(back); took >= 5*time.Second {
			t.Errorf("new lease delivered %s after etcd returned, want within 5s", took)
		}
		if _, id, ok := rawKV(t, cli, subnetKey(own)); !ok || id != own.LeaseID {
			t.Errorf("own key after the outage: present %v lease %x, want the same lease %x", ok, id, own.LeaseID)
		}
		waitLine(t, logs, "etcd reachable again")
		out := logs.String()
		if n := countLines(out, "level=WARN"); n != 1 || countLines(out, "level=WARN", "etcd unreachable", r.Endpoints()[0]) != 1 {
			t.Errorf("%d warnings, want exactly one 'etcd unreachable' naming the endpoint:\n%s", n, out)
		}
		if n := countLines(out, "etcd reachable again"); n != 1 {
			t.Errorf("%d recovery lines, want 1:\n%s", n, out)
		}
		if seq := rec.sequence(); seq != "up down up" {
			t.Errorf("health hook calls %q, want \"up down up\"", seq)
		}
		t.Logf("%d operations during 4 s of outage; log:\n%s", during, out)
	})
}

// An answer that is an error (here: no config key) proves etcd reachable.
func TestAnswersWithErrorsAreNotOutages(t *testing.T) {
	cli := etcdtest.Client(t, startEmbedded(t))
	rec := newHealthRec()
	s := etcdstore.New(cli, "/nowhere", slog.New(slog.DiscardHandler), etcdstore.WithHealth(rec.hook))
	if _, err := s.NetworkConfig(tctx(t)); !errors.Is(err, lease.ErrNoConfig) {
		t.Fatalf("missing config: %v", err)
	}
	if _, err := acquire(tctx(t), s, req("198.18.0.1", "")); !errors.Is(err, lease.ErrNoConfig) {
		t.Fatalf("acquire without config: %v", err)
	}
	if seq := rec.sequence(); seq != "up" {
		t.Errorf("hook calls %q, want just \"up\"", seq)
	}
}
