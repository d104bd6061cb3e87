package backend

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

// Retry delays after a failed reconcile or a lost subscription.
const (
	minRetry = 200 * time.Millisecond
	maxRetry = 30 * time.Second
)

// Subscription kinds, as reported to Observer.Subscribed.
const (
	SubscriptionLink  = "link"
	SubscriptionNeigh = "neigh"
)

// Run keeps the datapath converged until ctx ends: it answers misses, watches
// the device (recreating and reprogramming it when it disappears) and
// reconciles against a kernel dump at start, every ResyncInterval and after
// every resubscription. Call it once. It returns nil when ctx ends; every
// goroutine it starts has ended by then.
//
// It subscribes first and lists second, as an informer does: the first
// reconcile starts only once both subscriptions have been tried, and every
// subscription made later (after a failed first try, or after one ended)
// asks for a reconcile. So whatever changes while no subscription exists is
// seen by a kernel dump that starts after the subscription does.
func (v *VXLAN) Run(ctx context.Context) error {
	var wg, tried sync.WaitGroup
	tried.Add(2)
	wg.Go(func() { v.missLoop(ctx, sync.OnceFunc(tried.Done)) })
	wg.Go(func() { v.linkLoop(ctx, sync.OnceFunc(tried.Done)) })
	tried.Wait()
	v.controlLoop(ctx)
	wg.Wait()
	return nil
}

// subscribed reports one successful subscription of kind: the Observer hears
// of it, and then either the first try is over (tried: the first reconcile
// follows) or a reconcile is asked for, since events may have been missed
// while there was no subscription.
func (v *VXLAN) subscribed(kind string, first bool, tried func()) {
	if f := v.cfg.Observer.Subscribed; f != nil {
		f(kind)
	}
	if first {
		tried()
	} else {
		v.requestReconcile()
	}
}

// controlLoop serialises reconciles and on-demand activations.
func (v *VXLAN) controlLoop(ctx context.Context) {
	tick := time.NewTicker(v.cfg.ResyncInterval)
	defer tick.Stop()
	var retry <-chan time.Time
	delay := minRetry
	run := func() {
		if err := v.reconcile(); err != nil {
			v.log.Warn("reconcile failed; retrying", "err", err, "in", delay)
			retry = time.After(delay)
			delay = min(2*delay, maxRetry, v.cfg.ResyncInterval)
			return
		}
		retry, delay = nil, minRetry
	}
	run()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			run()
		case <-retry:
			run()
		case <-v.kick:
			run()
		case a := <-v.answered:
			v.recordAnswers(a)
		}
	}
}

// reconcile lists the kernel and converges it to the desired peers: the
// device is ensured (recreated if gone), the address re-applied, entries of
// departed peers deleted and missing ones added. Entries already right are not
// rewritten and nothing is flushed.
func (v *VXLAN) reconcile() (err error) {
	defer func() {
		if f := v.cfg.Observer.Reconciled; f != nil {
			f(err)
		}
	}()
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, recreated, err := v.ensureDeviceLocked(); err != nil {
		v.ready.Store(false)
		return err
	} else if recreated {
		v.log.Warn("vxlan device was recreated; reprogramming every peer")
	}
	var errs []error
	if v.lease.IsValid() {
		errs = append(errs, v.setAddressLocked())
	}
	if err := v.resyncLocked(); err != nil {
		v.ready.Store(false)
		return errors.Join(append(errs, err)...)
	}
	clear(v.direct)
	if !v.peersSet {
		return errors.Join(errs...) // programming waits for the first SetPeers
	}
	changes := v.drainAnswersLocked(nil)
	errs = append(errs, v.refreshDirectLocked()...)
	n, err := v.programLocked(changes)
	if n > 0 {
		v.log.Info("reconcile rewrote kernel entries", "writes", n)
	}
	return errors.Join(append(errs, err)...)
}

// resyncLocked replaces the in-memory view with a kernel dump; the next
// programming is a full diff. In on-demand mode it adopts the peers found
// there.
func (v *VXLAN) resyncLocked() error {
	have, err := v.listState()
	if err != nil {
		return err
	}
	v.have = have
	v.full = true
	v.adoptPending = v.cfg.Mode == ModeOnDemand
	return nil
}

// recordAnswers takes a miss answer, and every other one already queued, from
// the control loop and programs the peers they activated (on demand), only
// those peers' entries.
func (v *VXLAN) recordAnswers(a answered) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var changes []peerChange
	if c, ok := v.takeAnswerLocked(a); ok {
		changes = append(changes, c)
	}
	changes = v.drainAnswersLocked(changes)
	if len(changes) == 0 {
		return
	}
	if _, err := v.programLocked(changes); err != nil {
		v.log.Warn("programming activated peers failed", "peers", len(changes), "err", err)
	}
}

// takeAnswerLocked records what a miss answer wrote and reports whether it
// activated its peer (on demand: the peer's regular neighbour, FDB and route
// are to be programmed so later packets to its subnet no longer miss).
func (v *VXLAN) takeAnswerLocked(a answered) (peerChange, bool) {
	p := v.table.get(a.peer.Subnet)
	if p != a.peer && (p == nil || p.mac != a.peer.mac || p.PublicIP != a.peer.PublicIP || p.direct != a.peer.direct) {
		// The peer left or changed between the answer and now: the
		// answer may have written stale entries, which a reconcile
		// (listing the kernel) removes.
		v.requestReconcile()
		return peerChange{}, false
	}
	for _, o := range a.ops {
		v.have.record(o)
	}
	if v.cfg.Mode != ModeOnDemand || v.active[p.Subnet] {
		return peerChange{}, false
	}
	v.active[p.Subnet] = true
	v.log.Info("peer activated by miss", "peer", p.Name, "subnet", p.Subnet)
	return peerChange{old: p, cur: p}, true
}

// drainAnswersLocked takes the answers not yet seen by the control loop, so
// programming starts from a complete view even when Run is not running, and
// appends the activations to changes. It takes at most what the queue holds.
func (v *VXLAN) drainAnswersLocked(changes []peerChange) []peerChange {
	for range cap(v.answered) {
		select {
		case a := <-v.answered:
			if c, ok := v.takeAnswerLocked(a); ok {
				changes = append(changes, c)
			}
		default:
			return changes
		}
	}
	return changes
}

// missLoop answers misses until ctx ends, resubscribing (and asking for a full
// resync, since events were lost) whenever the subscription ends. tried is
// called once the first subscription attempt is over (or ctx ended).
func (v *VXLAN) missLoop(ctx context.Context, tried func()) {
	defer tried()
	nl, closeNL := v.missNetlink()
	defer closeNL()
	delay := minRetry
	for first := true; ctx.Err() == nil; first = false {
		ch, stop, err := v.subscribeNeigh(ctx)
		if err != nil {
			v.log.Warn("neighbour subscription failed; retrying", "err", err, "in", delay)
			tried() // the first reconcile does not wait for a retry
			if !sleepCtx(ctx, delay) {
				return
			}
			delay = min(2*delay, maxRetry)
			continue
		}
		delay = minRetry
		v.subscribed(SubscriptionNeigh, first, tried)
		unhook := context.AfterFunc(ctx, stop)
		for u := range ch {
			if ctx.Err() != nil {
				continue // draining after stop; the channel closes soon
			}
			if err := v.answerMiss(nl, u); err != nil {
				v.log.Warn("miss answer failed", "err", err)
			}
		}
		unhook()
		stop()
		if ctx.Err() == nil {
			v.log.Warn("neighbour subscription ended; resubscribing and resyncing")
		}
	}
}

// linkLoop asks for a reconcile when the device disappears, is replaced, goes
// down or changes its MAC (flannel#2247: the device vanished with a NIC flap
// and was never recreated), and after every resubscription. tried works as
// for missLoop.
func (v *VXLAN) linkLoop(ctx context.Context, tried func()) {
	defer tried()
	delay := minRetry
	for first := true; ctx.Err() == nil; first = false {
		ch, stop, err := v.subscribeLink(ctx)
		if err != nil {
			v.log.Warn("link subscription failed; retrying", "err", err, "in", delay)
			tried()
			if !sleepCtx(ctx, delay) {
				return
			}
			delay = min(2*delay, maxRetry)
			continue
		}
		delay = minRetry
		v.subscribed(SubscriptionLink, first, tried)
		unhook := context.AfterFunc(ctx, stop)
		for u := range ch {
			if ctx.Err() == nil && v.linkNeedsRepair(u.Header.Type, u.Attrs().Index, u.Attrs().Name, u.Attrs().Flags, u.Attrs().HardwareAddr) {
				v.requestReconcile()
			}
		}
		unhook()
		stop()
		if ctx.Err() == nil {
			v.log.Warn("link subscription ended; resubscribing and resyncing")
		}
	}
}

// sleepCtx waits d or until ctx ends; it reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// linkNeedsRepair decides whether a link event concerns the device in a way
// a reconcile must repair.
func (v *VXLAN) linkNeedsRepair(msgType uint16, index int, name string, flags net.Flags, mac net.HardwareAddr) bool {
	cur := int(v.devIndex.Load())
	if index != cur && name != v.cfg.deviceName() {
		return false
	}
	if msgType == rtmDelLink {
		return index == cur
	}
	want := v.devSnap.Load()
	return want == nil || index != cur || flags&net.FlagUp == 0 || !macEqual(mac, want.MAC)
}

func macEqual(a, b net.HardwareAddr) bool { return a.String() == b.String() }
