package etcdstore

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

// ErrUnreachable matches (errors.Is) every error of the Store that means etcd
// did not answer: no connection, a TLS mismatch, no leader, or no answer
// before the operation's deadline. Its text names the endpoints and the
// likely cause.
var ErrUnreachable = errors.New("etcd unreachable")

// unreachableError is an operation that etcd did not answer.
type unreachableError struct {
	endpoints []string
	cause     string // per endpoint, from diagnose; "" when nothing was found
	err       error  // what the client said
}

func (e *unreachableError) Error() string {
	if e.cause != "" {
		return "etcd unreachable: " + e.cause
	}
	return "etcd unreachable: " + strings.Join(e.endpoints, ",") + ": " + e.err.Error() +
		" (check the address and that http/https matches the server's TLS setting)"
}

func (e *unreachableError) Unwrap() error        { return e.err }
func (e *unreachableError) Is(target error) bool { return target == ErrUnreachable }

// Health timing defaults (see WithTimeouts).
const (
	defaultOpTimeout = 5 * time.Second
	// A probe every 8 s with a 2 s deadline: a hung etcd is reported within
	// 10 s; a stopped one at once (the connection leaves READY).
	defaultProbeEvery   = 8 * time.Second
	defaultProbeTimeout = 2 * time.Second
	// downProbeEvery is the pause between probes while etcd is down: the
	// watch and keepalive loops resume within about that much of etcd's
	// return (a probe itself waits up to the probe timeout).
	downProbeEvery = time.Second
	// downLogEvery bounds the "still unreachable" lines during an outage.
	downLogEvery = 30 * time.Second
	// diagnoseTimeout bounds the dials that look for the cause of a failure.
	diagnoseTimeout = 2 * time.Second
	// diagnoseReuse: a cause found this recently is reused, not dialled again.
	diagnoseReuse = 5 * time.Second
)

type healthState int

const (
	stateUnknown healthState = iota // nothing answered or failed yet
	stateUp
	stateDown
)

// health is the one place that knows whether etcd answers. Every timed
// operation and every probe of Monitor reports to it; it logs the transitions
// (a line on each, and at most one "still unreachable" line per 30 s while
// down), calls the WithHealth hook on each transition, and wakes the watch and
// keepalive loops (changes) so that they stop waiting on a dead stream and
// resume as soon as etcd answers again.
type health struct {
	log       *slog.Logger
	logOn     bool
	endpoints []string
	notify    func(up bool, err error)

	mu        sync.Mutex
	state     healthState
	everUp    bool      // etcd answered at least once
	err       error     // why down
	since     time.Time // start of the current state
	logged    time.Time // last line about an outage
	lastOK    time.Time // start of the newest operation that etcd answered
	lastOKEnd time.Time // when that answer came
	changed   chan struct{}
}

func newHealth(log *slog.Logger, endpoints []string) *health {
	return &health{log: log, logOn: true, endpoints: endpoints, changed: make(chan struct{})}
}

// ok records that an operation started at start got an answer from etcd.
func (h *health) ok(start time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if start.After(h.lastOK) {
		h.lastOK = start
	}
	h.lastOKEnd = time.Now()
	if h.state == stateUp {
		return
	}
	prev, since, first := h.state, h.since, !h.everUp
	h.transition(stateUp, nil)
	h.everUp = true
	if h.notify != nil {
		h.notify(true, nil)
	}
	if h.logOn {
		switch {
		case first && prev == stateDown:
			h.log.Info("connected to etcd", "endpoints", h.endpoints, "after", time.Since(since).Round(time.Millisecond))
		case first:
			h.log.Info("connected to etcd", "endpoints", h.endpoints)
		default:
			h.log.Info("etcd reachable again", "endpoints", h.endpoints, "down_for", time.Since(since).Round(time.Millisecond))
		}
	}
}

// fail records that an operation started at start got no answer. A failure
// of an operation older than the newest answered one is stale (it waited
// through an outage that has ended) and ignored.
func (h *health) fail(start time.Time, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.lastOK.IsZero() && start.Before(h.lastOK) {
		return
	}
	now := time.Now()
	if h.state == stateDown {
		h.err = err
		if h.logOn && now.Sub(h.logged) >= downLogEvery {
			h.logged = now
			h.log.Warn("etcd still unreachable", "endpoints", h.endpoints, "down_for", now.Sub(h.since).Round(time.Second), "err", err)
		}
		return
	}
	h.transition(stateDown, err)
	h.logged = now
	if h.notify != nil {
		h.notify(false, err)
	}
	if h.logOn {
		h.log.Warn("etcd unreachable: retrying (the datapath keeps its state)", "endpoints", h.endpoints, "err", err)
	}
}

// transition changes the state and wakes every waiter; the caller holds mu.
func (h *health) transition(to healthState, err error) {
	h.state, h.err, h.since = to, err, time.Now()
	close(h.changed)
	h.changed = make(chan struct{})
}

// current returns the state and a channel closed at the next transition.
func (h *health) current() (healthState, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state, h.changed
}

// lastAnswer is when etcd last answered (zero if never).
func (h *health) lastAnswer() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastOKEnd
}

// wait pauses a retry loop: about d (jittered) while etcd is up or its state
// unknown; while it is down, until it answers again or d passes, whichever
// comes first (without Monitor nobody probes, and d is the retry). False when
// ctx ended.
func (h *health) wait(ctx context.Context, d time.Duration) bool {
	st, changed := h.current()
	if st != stateDown {
		return sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-changed:
			if st, changed = h.current(); st != stateDown {
				return true
			}
		}
	}
}

// unreachable reports whether err means etcd did not answer (as opposed to
// an answer that is an error, which proves etcd reachable).
func unreachable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	for _, e := range []error{rpctypes.ErrNoLeader, rpctypes.ErrGRPCNoLeader, rpctypes.ErrTimeout,
		rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost, rpctypes.ErrGRPCTimeout} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// timed runs f with a deadline of the operation timeout, reports its latency
// and result to the observer and its outcome to the health state. An error
// that means etcd did not answer comes back as an *unreachableError naming
// the endpoints and the likely cause (matching ErrUnreachable).
func (s *Store) timed(ctx context.Context, op string, f func(ctx context.Context) error) error {
	return s.timedWithin(ctx, op, s.opTimeout, f)
}

func (s *Store) timedWithin(ctx context.Context, op string, timeout time.Duration, f func(ctx context.Context) error) error {
	octx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	err := f(octx)
	if s.observe != nil {
		s.observe(op, time.Since(start), err)
	}
	return s.judge(ctx, start, err)
}

// judge feeds one outcome to the health state and returns the error to hand
// back: unchanged, or wrapped with the cause when etcd did not answer.
func (s *Store) judge(ctx context.Context, start time.Time, err error) error {
	switch {
	case err == nil:
		s.health.ok(start)
		return nil
	case errors.Is(ctx.Err(), context.Canceled):
		return err // the caller gave up (shutdown): no news about etcd
	case !unreachable(err):
		s.health.ok(start) // etcd answered, with an error
		return err
	}
	if errors.Is(err, ErrUnreachable) {
		return err
	}
	uerr := &unreachableError{endpoints: s.cli.Endpoints(), err: err, cause: s.diag.cause(ctx, s.cli)}
	s.health.fail(start, uerr)
	return uerr
}

// Monitor probes etcd until ctx ends, so that an outage is noticed (and
// logged, and passed to the WithHealth hook) even when nothing else talks to
// etcd, and so that the watch and keepalive loops resume as soon as etcd is
// back. The probe is a linearizable count-only read of <prefix>/config: it
// needs a leader and a quorum, like every write. While etcd answers, a probe
// runs at once when the client's gRPC connection leaves READY (etcd stopped
// or killed: reported within the probe timeout), and otherwise every probe
// period (a hung etcd or a silent network: reported within the period plus
// the timeout, 10 s by default), skipped when another operation got an answer
// within the period. While etcd is down, a probe runs every second (each one
// waits up to the probe timeout). weftd run starts it; one-shot commands do
// not need it.
func (s *Store) Monitor(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	left := make(chan struct{}, 1) // the connection left READY
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchConnState(ctx, s.cli.ActiveConnection(), left)
	}()
	defer func() { cancel(); <-done }()
	next := time.Duration(0) // probe at once: a bad address is reported within the probe timeout
	for {
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-left:
			t.Stop()
		case <-t.C:
			if st, _ := s.health.current(); st == stateUp {
				if idle := time.Since(s.health.lastAnswer()); idle < s.probeEvery {
					next = s.probeEvery - idle
					continue
				}
			}
		}
		_ = s.timedWithin(ctx, "probe", s.probeTimeout, func(ctx context.Context) error {
			_, err := s.cli.Get(ctx, s.configKey(), clientv3.WithCountOnly())
			return err
		})
		next = s.probeEvery
		if st, _ := s.health.current(); st != stateUp {
			next = downProbeEvery
		}
	}
}

// watchConnState signals left (without blocking) each time conn leaves READY,
// until ctx ends. It costs nothing while the state does not change.
func watchConnState(ctx context.Context, conn *grpc.ClientConn, left chan<- struct{}) {
	if conn == nil {
		return
	}
	for {
		st := conn.GetState()
		if !conn.WaitForStateChange(ctx, st) {
			return // ctx ended
		}
		if st == connectivity.Ready {
			select {
			case left <- struct{}{}:
			default:
			}
		}
	}
}
