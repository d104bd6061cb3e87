// Package lab builds a throw-away multi-node weft cluster out of network
// namespaces and the BUILT binaries (weftd, weft-etcd, weft, portmap): the e2e tests,
// `make demo` and the benchmarks all use it.
//
//	              <p>-sw: bridge br0 (the underlay switch, 198.18.0.0/24)
//	    ┌────────────────┬────────────────┬────────────────┐
//	    │                │                │                │
//	<p>-etcd         <p>-node1        <p>-node2 …      <p>-out
//	198.18.0.200     198.18.0.1       198.18.0.2       198.18.0.250
//	weft-etcd or     weftd run        weftd run        "outside" host: no
//	/usr/bin/etcd    flannel.1, cni0  flannel.1, cni0  route to the pods
//	                   └ <p>-node1-<pod>: pod netns, attached by weft via libcni
//
// Families: Options.Underlay picks the addresses on every eth0 — IPv4 (the
// default, as drawn), dual (each eth0 also has fd00:198:18::N, etcd
// fd00:198:18::200, the outside host fd00:198:18::250, all added with nodad)
// or IPv6-only (only those; etcd listens on its IPv6 address and agents get
// http://[fd00:198:18::200]:2379). Options.Overlay picks the network config
// written to etcd: IPv4 {"Network":"10.244.0.0/16",...}, dual adds
// "EnableIPv6":true,"IPv6Network":"fc00::/48", IPv6-only is
// {"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48",...}. The
// underlay defaults to the overlay's family; they may differ (a dual network
// on an IPv4-only underlay is how a test sees weftd refuse it). Pods and nodes
// carry an address per family (Pod.IP/IP6, Node.IP/IP6, Addr(family)); Ping
// uses ICMPv6 for an IPv6 address.
//
// <p> is a per-lab random prefix "wl<4 hex>", so labs running in parallel do
// not collide. Every node runs `ip netns exec <p>-nodeN weftd run ...` against
// the etcd in <p>-etcd; the lab itself talks to etcd, to the agents' /readyz
// and to pods through sockets it opens inside those namespaces (never in the
// root netns, where it adds no address, route or link).
//
// Invariants:
//   - Everything the lab creates (namespaces, processes, temp dir) is removed
//     by Close, which is idempotent; processes are stopped by PID, and are also
//     killed by the kernel (Pdeathsig) if the lab's process dies first, unless
//     Options.Keep asks to leave them running.
//   - The lab never depends on testing.TB: `make demo` uses it too.
//   - Nodes share one filesystem; each gets its own directory for subnet.env,
//     the IPAM data dir and the CNI conf dir, injected into the weft plugin
//     object of manifests/10-weft.conflist after loading it.
package lab
