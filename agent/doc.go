// Package agent is weftd's node agent: it ties the lease store, the VXLAN
// datapath, nftables and the node files together. It builds none of them:
// New takes them as Deps (small interfaces this package owns), with the
// underlay interface already chosen, so that a table test can run the whole
// agent over lease.MemStore and the datapath over a fake host.
//
// Run does, in this order (each step needs the one before):
//
//  1. read the network config (waiting, with a clear message, while the key is missing),
//     and refuse to start when it enables an address family the underlay has no address of;
//  2. guard the VXLAN devices against router advertisements;
//  3. build one datapath per enabled family from that config and ensure its device
//     (flannel.<VNI> for IPv4, flannel-v6.<VNI> for IPv6; the MACs are published in the lease);
//  4. acquire the lease under that same config (own lease, then the subnets of the previous subnet.env, then a free block);
//  5. put <lease .0>/32 on flannel.<VNI> and <IPv6 lease ::0>/128 on flannel-v6.<VNI>;
//  6. install (or remove) the masquerade rules, for both families;
//  7. write subnet.env atomically (FLANNEL_IPV6_* when IPv6 is on; the MTU is the smaller device's);
//  8. install the CNI conflist atomically — only now, so the kubelet never sees a
//     network config before the plugin can serve an ADD;
//  9. run keepalive, watch, datapath (miss answering, reconcile) and the HTTP
//     servers under one errgroup; the first error stops them all.
//
// Address families follow flannel: IPv4 pods ride flannel.<VNI> over the
// node's IPv4 address, IPv6 pods flannel-v6.<VNI> over its IPv6 address (a
// lease carries PublicIP/BackendData and PublicIPv6/BackendV6Data). A dual
// stack node runs both datapaths side by side, an IPv6-only node only the
// second; a peer lease lacking a family is no peer of that family's
// datapath (an IPv4-only flannel node in a dual-stack cluster).
//
// Invariants: the agent never releases its lease, flushes the datapath or removes
// masquerade rules on shutdown — pods keep working while it restarts, and a
// restarted agent reconciles instead of flushing. No goroutine outlives Run.
// The packet path (miss answers) never waits on etcd: the datapath answers from
// the peer table the watch loop hands it.
package agent
