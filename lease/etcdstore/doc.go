// Package etcdstore is the etcd (v3 API) implementation of lease.Store,
// wire-compatible with flannel's etcd mode (FORMATS.md), plus an etcd client
// constructor with strict TLS checks. The single-member etcd server for tests,
// the demo and `weftd run` without --etcd-endpoints is in etcdserver, so that
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
//   - Only this package (and etcdserver) imports go.etcd.io; no etcd type
//     leaks through the lease.Store API.
package etcdstore
