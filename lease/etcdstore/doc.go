// Package etcdstore is the etcd (v3 API) implementation of lease.Store,
// wire-compatible with flannel's etcd mode (the same keys and values under
// <prefix>/config and <prefix>/subnets/), plus an etcd client constructor
// with strict TLS checks. The single-member etcd server for tests, the demo
// and `weftd run` without --etcd-endpoints is in etcdserver, so that
// importing this package does not link the server.
//
// Invariants:
//   - Every write is conditional: create is a transaction on Version(key)==0
//     with the value attached to a freshly granted etcd lease (revoked when
//     the transaction fails); an update of our own value is a CAS on
//     ModRevision that keeps the key's etcd lease (WithLease of its ID; a
//     reservation stays lease-less). There is no unconditional Put of a lease.
//   - Renewal uses etcd's KeepAlive on the same lease ID. A lost lease is
//     re-created at the same key before anything else; a key taken by another
//     node yields lease.ErrLeaseLost.
//   - A key with no etcd lease (kv.Lease == 0) is a reservation: honoured,
//     never given a lease, never renewed, never released.
//   - TimeToLive is only ever asked about our own lease, never per peer.
//   - Keys or values that do not parse, and leases of other backends, are
//     skipped with one warning per key and revision; they never stop a list
//     or a watch, and their blocks are never handed out.
//   - Watch resumes from the listed revision + 1 with require-leader; after a
//     compaction or an error it backs off with jitter, re-lists and emits only
//     the difference from what it delivered. Its goroutine ends with ctx.
//
// etcd problems are never silent (health.go, diagnose.go):
//   - Every unary call has a deadline: timed derives a per-operation context
//     (5 s by default, WithTimeouts) from the caller's. The streams (the lease
//     watch, our key's watch in KeepAlive) have none; they are guarded by the
//     health state instead.
//   - One health state knows whether etcd answers: every timed operation
//     reports to it (an answer, even an error answer such as "key not found",
//     means up; no answer, Unavailable or no leader means down; a failure of
//     an operation that started before the newest answer is stale and
//     ignored), and Monitor, which weftd run starts, probes with a
//     linearizable count-only read: at once when the client's gRPC connection
//     leaves READY, every 8 s while etcd answers and nothing else did, every
//     second while it is down. A stopped etcd is reported within about the
//     probe timeout (2 s), a hung one within 10 s.
//   - The state logs each transition ("connected to etcd", "etcd unreachable"
//     at Warn, "etcd reachable again") and at most one "etcd still
//     unreachable" line per 30 s in between, and calls the WithHealth hook on
//     each transition (weftd: weft_etcd_up, weft_etcd_failures_total, and the
//     /readyz reason while no lease was ever held). The watch and keepalive
//     loops do not log a failure that only says etcd is down.
//   - An operation etcd did not answer fails with an error matching
//     ErrUnreachable that names the endpoints and the likely cause. gRPC only
//     says "context deadline exceeded" (it keeps the transport error to
//     itself), so the store dials each endpoint with the client's TLS
//     settings (NewClient remembers them per client) and reports the TCP
//     error, the TLS handshake error (unknown authority, a plain server behind
//     https://), a refused client certificate, a TLS server behind http://,
//     or that etcd accepts connections but does not answer. A cause is reused
//     for 5 s, so an outage costs at most one such dial round per 5 s.
//   - When the state goes down, the watch drops its stream and, once etcd
//     answers again, re-lists and emits the difference (so a compaction during
//     the outage cannot strand it, flannel#2470); KeepAlive restarts its
//     read-watch-renew cycle the same way. Both wait between attempts with
//     backoff and jitter and wake up when etcd is back: they never spin.
//     Watch returns its channel even when etcd does not answer the first list;
//     the snapshot comes once it does.
//   - Only this package (and etcdserver) imports go.etcd.io; no etcd type
//     leaks through the lease.Store API.
package etcdstore
