package agent

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/weftnet/weft/backend"
)

// Metrics are weftd's Prometheus metrics, on a registry of their own.
type Metrics struct {
	Registry *prometheus.Registry

	leasesKnown     prometheus.Gauge
	freeSubnets     prometheus.Gauge
	peersProgrammed prometheus.Gauge
	// programmed is each family's last count plus one (0: that family has
	// reported nothing); the gauge shows the smaller count, the peers
	// programmed in every family.
	programmed      [2]atomic.Int64
	missesAnswered  *prometheus.CounterVec
	missesIgnored   *prometheus.CounterVec
	missLatency     prometheus.Histogram
	reconcileRuns   prometheus.Counter
	reconcileErrors prometheus.Counter
	etcdLatency     *prometheus.HistogramVec
	etcdErrors      *prometheus.CounterVec
	etcdHealth      etcdHealth // weft_etcd_up, weft_etcd_failures_total, why etcd is down
	leaseConflicts  prometheus.Counter
	forwardBlockers prometheus.Gauge
	rulesErrors     prometheus.Counter
}

// NewMetrics creates and registers every metric.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		leasesKnown: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_leases_known", Help: "Valid subnet leases in the store, ours included."}),
		freeSubnets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_subnets_free", Help: "Blocks between SubnetMin and SubnetMax not leased."}),
		peersProgrammed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_peers_programmed", Help: "Peers whose datapath entries are programmed."}),
		missesAnswered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_misses_answered_total", Help: "Kernel L2/L3 miss events answered from memory."}, []string{"kind"}),
		missesIgnored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_misses_ignored_total", Help: "Miss events for unknown destinations."}, []string{"kind"}),
		missLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "weft_miss_answer_seconds",
			Help:    "Time from a miss event's arrival to the entry being written.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 2, 14)}),
		reconcileRuns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_reconcile_runs_total", Help: "Datapath list-and-diff reconciles."}),
		reconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_reconcile_errors_total", Help: "Datapath reconciles that failed."}),
		etcdLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "weft_etcd_op_seconds", Help: "Latency of etcd operations.",
			Buckets: prometheus.ExponentialBuckets(100e-6, 2, 16)}, []string{"op"}),
		etcdErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_etcd_op_errors_total", Help: "Failed etcd operations."}, []string{"op"}),
		leaseConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_lease_conflicts_total",
			Help: "Times another node took over our lease under the same --node-name."}),
		forwardBlockers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_forward_blockers",
			Help: "Firewall chains weft cannot override that drop forwarded pod traffic."}),
		rulesErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_rules_errors_total",
			Help: "Periodic nftables rule passes (masquerade, forward accepts) that failed."}),
	}
	m.Registry.MustRegister(m.leasesKnown, m.freeSubnets, m.peersProgrammed, m.missesAnswered,
		m.missesIgnored, m.missLatency, m.reconcileRuns, m.reconcileErrors, m.etcdLatency, m.etcdErrors,
		m.leaseConflicts, m.forwardBlockers, m.rulesErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.etcdHealth.register(m.Registry)
	return m
}

// ObserveEtcd records one etcd operation; pass it to the etcd store as its observer.
func (m *Metrics) ObserveEtcd(op string, d time.Duration, err error) {
	m.etcdLatency.WithLabelValues(op).Observe(d.Seconds())
	if err != nil {
		m.etcdErrors.WithLabelValues(op).Inc()
	}
}

// etcdHealth is etcd's reachability as the store sees it (EtcdHealth).
type etcdHealth struct {
	up       prometheus.Gauge
	failures prometheus.Counter
	down     atomic.Pointer[string] // why, while etcd does not answer
}

func (h *etcdHealth) register(r *prometheus.Registry) {
	h.up = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "weft_etcd_up",
		Help: "1 while etcd answers, 0 while it does not (and before its first answer)."})
	h.failures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "weft_etcd_failures_total",
		Help: "Times etcd became unreachable (weft_etcd_up went to 0), the first failed connection included."})
	r.MustRegister(h.up, h.failures)
}

// EtcdHealth records etcd's reachability; pass it to the etcd store
// (etcdstore.WithHealth). It is called on each change: up, or down with why.
func (m *Metrics) EtcdHealth(up bool, err error) {
	h := &m.etcdHealth
	if up {
		h.up.Set(1)
		h.down.Store(nil)
		return
	}
	h.up.Set(0)
	h.failures.Inc()
	why := "etcd unreachable"
	if err != nil {
		why = err.Error()
	}
	h.down.Store(&why)
}

// etcdDown says why etcd does not answer; "" while it does.
func (m *Metrics) etcdDown() string {
	if why := m.etcdHealth.down.Load(); why != nil {
		return *why
	}
	return ""
}

// observer adapts the metrics to the hooks of the datapath of one family.
func (m *Metrics) observer(v6 bool) backend.Observer {
	fam := 0
	if v6 {
		fam = 1
	}
	return backend.Observer{
		MissAnswered: func(kind string, d time.Duration) {
			m.missesAnswered.WithLabelValues(kind).Inc()
			m.missLatency.Observe(d.Seconds())
		},
		MissIgnored: func(kind string) { m.missesIgnored.WithLabelValues(kind).Inc() },
		Reconciled: func(err error) {
			m.reconcileRuns.Inc()
			if err != nil {
				m.reconcileErrors.Inc()
			}
		},
		PeersProgrammed: func(n int) {
			m.programmed[fam].Store(int64(n) + 1)
			low := int64(-1)
			for i := range m.programmed {
				if c := m.programmed[i].Load() - 1; c >= 0 && (low < 0 || c < low) {
					low = c
				}
			}
			m.peersProgrammed.Set(float64(low))
		},
	}
}
