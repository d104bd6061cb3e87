package backend

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
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
	// subscribed reports one successful subscription of kind: the Observer
	// hears of it, and then either the first try is over (the first
	// reconcile follows) or a reconcile is asked for, since events may have
	// been missed while there was no subscription.
	subscribed := func(kind string, first bool, tried func()) {
		if f := v.cfg.Observer.Subscribed; f != nil {
			f(kind)
		}
		if first {
			tried()
		} else {
			v.requestReconcile()
		}
	}
	wg.Go(func() {
		nl, closeNL := v.device.missNetlink()
		defer closeNL()
		resubscribe(ctx, v.log, SubscriptionNeigh, "neighbour", v.device.subscribeNeigh, func(u netlink.NeighUpdate) {
			if err := v.resp.answer(nl, u); err != nil {
				v.log.Warn("miss answer failed", "err", err)
			}
		}, subscribed, sync.OnceFunc(tried.Done))
	})
	wg.Go(func() {
		resubscribe(ctx, v.log, SubscriptionLink, "link", v.device.subscribeLink, func(u netlink.LinkUpdate) {
			if v.device.needsRepair(u) {
				v.requestReconcile()
			}
		}, subscribed, sync.OnceFunc(tried.Done))
	})
	tried.Wait()
	v.controlLoop(ctx)
	wg.Wait()
	return nil
}

// controlLoop serialises reconciles and on-demand activations (SetPeers
// takes the same lock).
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
		case <-v.resp.wake:
			v.takeAnswers()
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
	if _, recreated, err := v.device.ensureDeviceLocked(); err != nil {
		v.ready.Store(false)
		return err
	} else if recreated {
		v.log.Warn("vxlan device was recreated; reprogramming every peer")
	}
	var errs []error
	if v.lease.IsValid() {
		errs = append(errs, v.device.setAddress(v.lease))
	}
	flips, err := v.resyncLocked(false)
	if err != nil {
		v.ready.Store(false)
		return errors.Join(append(errs, err)...)
	}
	if !v.model.set {
		return errors.Join(errs...) // programming waits for the first SetPeers
	}
	errs = append(errs, flips...)
	n, err := v.programLocked(v.takeAnswersLocked())
	if n > 0 {
		v.log.Info("reconcile rewrote kernel entries", "writes", n)
	}
	return errors.Join(append(errs, err)...)
}

// requestReconcile asks Run for a full list-and-diff reconcile (coalescing).
func (v *VXLAN) requestReconcile() {
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

// resubscribe handles the events of one subscription until ctx ends,
// resubscribing whenever the subscription ends. subscribed is told of every
// subscription made; tried is called once the first attempt is over (or ctx
// ended).
func resubscribe[T any](ctx context.Context, log *slog.Logger, kind, what string,
	subscribe func(context.Context) (<-chan T, func(), error), handle func(T),
	subscribed func(kind string, first bool, tried func()), tried func()) {
	defer tried()
	delay := minRetry
	for first := true; ctx.Err() == nil; first = false {
		ch, stop, err := subscribe(ctx)
		if err != nil {
			log.Warn(what+" subscription failed; retrying", "err", err, "in", delay)
			tried() // the first reconcile does not wait for a retry
			if !sleepCtx(ctx, delay) {
				return
			}
			delay = min(2*delay, maxRetry)
			continue
		}
		delay = minRetry
		subscribed(kind, first, tried)
		unhook := context.AfterFunc(ctx, stop)
		for u := range ch {
			if ctx.Err() != nil {
				continue // draining after stop; the channel closes soon
			}
			handle(u)
		}
		unhook()
		stop()
		if ctx.Err() == nil {
			log.Warn(what + " subscription ended; resubscribing and resyncing")
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
