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

// Run keeps the datapath converged until ctx ends: it answers misses, watches
// the device (recreating and reprogramming it when it disappears) and
// reconciles against a kernel dump at start, every ResyncInterval and after a
// lost subscription. Call it once. It returns nil when ctx ends; every
// goroutine it starts has ended by then.
func (v *VXLAN) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { v.missLoop(ctx) })
	wg.Go(func() { v.linkLoop(ctx) })
	v.controlLoop(ctx)
	wg.Wait()
	return nil
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
			v.recordAnswer(a)
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
	errs = append(errs, v.programLocked())
	return errors.Join(errs...)
}

// resyncLocked replaces the in-memory view with a kernel dump. In on-demand
// mode the next programLocked adopts the peers found there.
func (v *VXLAN) resyncLocked() error {
	have, err := v.listState()
	if err != nil {
		return err
	}
	v.have = have
	v.adoptPending = v.cfg.Mode == ModeOnDemand
	return nil
}

// adoptLocked marks as active (on-demand) every peer of t that already has
// an entry in the kernel, so a restart keeps what misses had programmed.
func (v *VXLAN) adoptLocked(have state, t *peerTable) {
	mark := func(p *tablePeer, ok bool) {
		if ok && !v.active[p.Subnet] {
			v.active[p.Subnet] = true
			v.log.Debug("peer adopted from kernel state", "peer", p.Name, "subnet", p.Subnet)
		}
	}
	for ip := range have.neigh {
		mark(t.bySubnet.lookup(ip))
	}
	for f := range have.fdb {
		p, ok := t.byMAC[f.MAC]
		mark(p, ok)
	}
	for r := range have.route {
		p, ok := t.bySubnet.m[r.Dst]
		mark(p, ok)
	}
}

// recordAnswer takes a miss answer from the control loop and programs the
// peer it activated, if any.
func (v *VXLAN) recordAnswer(a answered) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.takeAnswerLocked(a) {
		return
	}
	if err := v.programLocked(); err != nil {
		v.log.Warn("programming activated peer failed", "peer", a.peer, "err", err)
	}
}

// takeAnswerLocked records a miss answer in the in-memory kernel view (so a
// later SetPeers can remove what it wrote) and reports whether it activated
// its peer (on-demand mode: the peer's neighbour, FDB and route are to be
// programmed so later packets to its subnet no longer miss).
func (v *VXLAN) takeAnswerLocked(a answered) bool {
	t := v.table.Load()
	p, ok := t.bySubnet.m[a.peer]
	if a.table != t {
		was := a.table.bySubnet.m[a.peer]
		if !ok || was.mac != p.mac || was.PublicIP != p.PublicIP {
			// The peer left or changed between the answer and now: the
			// answer may have written stale entries, which a reconcile
			// (listing the kernel) removes.
			v.requestReconcile()
			return false
		}
	}
	for _, o := range a.ops {
		v.have.record(o)
	}
	if v.cfg.Mode != ModeOnDemand || v.active[a.peer] {
		return false
	}
	v.active[a.peer] = true
	v.log.Info("peer activated by miss", "peer", p.Name, "subnet", a.peer)
	return true
}

// drainAnswersLocked takes the answers not yet seen by the control loop, so
// programming starts from a complete view even when Run is not running.
func (v *VXLAN) drainAnswersLocked() {
	for {
		select {
		case a := <-v.answered:
			v.takeAnswerLocked(a)
		default:
			return
		}
	}
}

// missLoop answers misses until ctx ends, resubscribing (and asking for a full
// resync, since events were lost) whenever the subscription ends.
func (v *VXLAN) missLoop(ctx context.Context) {
	delay := minRetry
	for first := true; ctx.Err() == nil; first = false {
		ch, stop, err := v.subscribeNeigh(ctx)
		if err != nil {
			v.log.Warn("neighbour subscription failed; retrying", "err", err, "in", delay)
			if !sleepCtx(ctx, delay) {
				return
			}
			delay = min(2*delay, maxRetry)
			continue
		}
		delay = minRetry
		if !first {
			v.requestReconcile()
		}
		unhook := context.AfterFunc(ctx, stop)
		for u := range ch {
			if ctx.Err() != nil {
				continue // draining after stop; the channel closes soon
			}
			if err := v.HandleMiss(u); err != nil {
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
// and was never recreated).
func (v *VXLAN) linkLoop(ctx context.Context) {
	delay := minRetry
	for ctx.Err() == nil {
		ch, stop, err := v.subscribeLink(ctx)
		if err != nil {
			v.log.Warn("link subscription failed; retrying", "err", err, "in", delay)
			if !sleepCtx(ctx, delay) {
				return
			}
			delay = min(2*delay, maxRetry)
			continue
		}
		delay = minRetry
		unhook := context.AfterFunc(ctx, stop)
		for u := range ch {
			if ctx.Err() == nil && v.linkNeedsRepair(u.Header.Type, u.Attrs().Index, u.Attrs().Name, u.Attrs().Flags, u.Attrs().HardwareAddr) {
				v.requestReconcile()
			}
		}
		unhook()
		stop()
		if ctx.Err() == nil {
			v.log.Warn("link subscription ended; resubscribing")
			v.requestReconcile()
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
