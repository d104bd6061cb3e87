// Package agent is weftd's node agent: it ties the lease store, the VXLAN
// datapath, nftables and the node files together. It builds none of them:
// New takes them as Deps (small interfaces this package owns), with the
// underlay interface already chosen, so that a table test can run the whole
// agent over lease.MemStore and the datapath over a fake host.
//
// Run does, in this order (each step needs the one before):
//
//  1. read the network config (waiting, with a clear message, while the key is missing);
//  2. guard the VXLAN device against router advertisements;
//  3. build the datapath from that config and ensure the VXLAN device (its MAC is published in the lease);
//  4. acquire the lease under that same config (own lease, then the subnet of the previous subnet.env, then a free block);
//  5. put <lease .0>/32 on the device;
//  6. install (or remove) the masquerade rules;
//  7. write subnet.env atomically;
//  8. install the CNI conflist atomically — only now, so the kubelet never sees a
//     network config before the plugin can serve an ADD;
//  9. run keepalive, watch, datapath (miss answering, reconcile) and the HTTP
//     servers under one errgroup; the first error stops them all.
//
// Invariants: the agent never releases its lease, flushes the datapath or removes
// masquerade rules on shutdown — pods keep working while it restarts, and a
// restarted agent reconciles instead of flushing. No goroutine outlives Run.
// The packet path (miss answers) never waits on etcd: the datapath answers from
// the peer table the watch loop hands it.
package agent
