// Package backend is weft's VXLAN datapath: it keeps the device
// flannel.<VNI> and, for every remote node (a Peer), the kernel entries that
// carry pod traffic to it. It knows nothing of etcd or leases; the agent maps
// leases to Peers and calls EnsureDevice, SetAddress, SetPeers and Run.
//
// # Address families
//
// One VXLAN datapath serves one address family, that of
// Config.Device.LocalIP, as flannel's vxlan backend does: an IPv4 one keeps
// flannel.<VNI> (the IPv4 overlay over the IPv4 underlay), an IPv6 one
// flannel-v6.<VNI> (DeviceNameV6: the IPv6 overlay over the IPv6 underlay).
// A dual-stack node runs one of each, on the same underlay link with the
// same VNI and port (the kernel keeps an IPv4 and an IPv6 socket for the
// port, and a VNI is unique per family); there is no IPv4 overlay over an
// IPv6 underlay. Everything a datapath lists, owns, writes and diffs is of
// its family: its Network, its peers' subnets and public IPs (others are
// invalid peers), the neighbours (NDP entries for IPv6), the routes, the FDB
// remotes, the underlay routes DirectRouting is decided from, and the
// neighbour table whose app_solicit raises L3 misses ("arp_cache" or
// "ndisc_cache"). Below, .0 reads ::0 and /32 reads /128 for IPv6.
//
// # Kernel layout (wire-compatible with flannel's vxlan backend)
//
// The device: VNI (default 1), UDP port (default 8472), local = the node's
// public IP, on the underlay link, nolearning, MTU = underlay MTU − 50 (−70
// over IPv6, and at least IPv6's 1280 there), a random locally administered
// MAC given in the create request and re-verified after link up, address
// <lease .0>/32 (IPv6: <lease ::0>/128 with nodad, so it is usable as a
// source at once; its kernel prefix route is not ours). Per peer, all
// permanent: a neighbour <peer .0> → VtepMAC, an FDB entry VtepMAC → PublicIP
// and a route <peer subnet> via <peer .0> onlink. With DirectRouting a peer on
// the same L2 segment gets <subnet> via <PublicIP> on the underlay instead.
// Every route weft writes has route protocol 119 (RouteProtocol; see Routes).
// IPv6 autoconfiguration stays off both devices: addrgen mode none (no
// link-local address; the IPv6 device has only its /128) and
// accept_ra=0, since without it a router advertisement sent to the VXLAN
// port by anyone would configure IPv6 on the node through the device
// (refuseRouterAdverts explains, and what happens when /proc/sys is
// read-only).
//
// One deliberate difference from flannel: a peer route is at metric
// peerMetric(subnet), the subnet's number at its length (10.244.2.0/24 →
// 717826), not 0. The kernel keeps a route's shared attributes in a hash
// keyed by device, metric, scope, protocol and source, not by gateway, so
// with every peer route at metric 0 on one device all of them chain in one
// bucket and each insert compares itself with every other, which distinct
// metrics avoid (test/bench shows the difference). Peer subnets never
// overlap, so the metric decides nothing. Nothing on the wire changes. A node that ran flannel has its routes at metric 0: they are not
// the wanted routes, so a reconcile adds ours and then deletes them. IPv6
// has no such shared attributes; its peer routes take the low 32 bits of
// the subnet's number all the same, for one layout. An IPv6 route cannot
// have metric 0: the kernel stores 0 as 1024, so flannel's IPv6 routes are
// at 1024, and so is the on-demand Network route (a number of 0 gives 1024
// too).
//
// # Routes
//
// weft marks its routes with route protocol 119 (RouteProtocol). The number
// is unassigned: not one the kernel interprets (0–4: unspec, redirect,
// kernel, boot, static), nor one rtnetlink.h or iproute2's rt_protos names
// for a routing daemon (8–18, 42, 99, 186–192), nor FRR's 193–198.
// `ip route` prints it as "proto 119" and `ip route show proto 119` lists
// exactly weft's routes; the line "119 weft" in a file under
// /etc/iproute2/rt_protos.d/ makes iproute2 print the name instead.
//
// Of the main-table routes on the device, and (with a Network) on the
// underlay, a reconcile rewrites or deletes only these (ownsRoute):
//
//   - protocol 119: weft's own. On the underlay weft only writes
//     DirectRouting routes, so there they must also be through a gateway to
//     a subnet strictly inside the Network.
//   - Peer routes an earlier agent left, which weft takes over: protocol
//     boot, through a gateway, to a subnet strictly inside the Network, at
//     metric 0 (flannel's) or peerMetric (weft's before it marked its
//     routes), and on the device via the subnet's .0. Weft's replacement
//     goes in before the old route goes, so traffic keeps flowing. This
//     needs Config.Network; without it nothing is taken over.
//
// Everything else is left alone: a route outside the Network (an operator's
// `ip route add 192.0.2.0/24 dev flannel.1`), one with another protocol
// (static, a routing daemon's), one without a gateway, one at another metric
// or, on the device, via another gateway. `ip route add` writes protocol boot
// too, so a route that an operator adds inside the Network in exactly
// flannel's shape (via the subnet's .0, metric 0) is taken for flannel's and
// removed unless a peer wants it: the Network belongs to the cluster. Deletes
// name the route's protocol, so the kernel removes that route only; a replace
// is keyed by destination and metric whatever the protocol, so a foreign
// route at exactly the destination and metric of a route weft wants is
// overwritten. That is also how a route of weft's changed by hand comes
// back: the next reconcile finds weft's missing and replaces whatever is at
// its destination and metric (a deleted one is simply added again).
//
// # Invariants
//
//   - All kernel work goes through the host.Host given to New (a *host.NS,
//     or a host.Fake in tests), subscriptions and sysctls included. Miss
//     answers while Run runs go through its Clone, a second connection to
//     the same namespace, so an answer never queues behind a bulk SetPeers
//     on the shared socket. Nothing here opens a netlink socket or enters a
//     namespace.
//   - Ownership: on the device, every neighbour of the datapath's family
//     with a link-layer address (not the kernel's NOARP multicast entries)
//     and every FDB entry with a remote of that family are ours; of the main-table
//     routes on the device and on the underlay, those with protocol 119 and
//     the peer routes flannel left (see Routes). Anything else is never
//     deleted.
//   - Programming is declarative: a pure diff from the current view to the
//     wanted state, adds before deletes, and per peer neighbour → FDB → route.
//     The route comes last because a route whose gateway has no neighbour
//     entry makes the kernel ARP for it. A changed VtepMAC or PublicIP is a
//     replace followed by the delete of the stale entries (flannel leaves the
//     old FDB entry behind, flannel#1795). When a peer's write fails, its
//     remaining writes, including the deletes of its stale entries, wait for
//     the next attempt.
//   - Programming is incremental: the in-memory view of the kernel is
//     indexed by owning subnet (each entry in the bucket of the peer whose
//     subnet holds it, or whose VtepMAC it carries; entries no peer owns in
//     an orphans bucket) and updated in place by every successful write.
//     One diff, diffOwner, takes one bucket to what its owner wants. A
//     SetPeers runs it for the peers added, changed or removed since the
//     previous call (and for the owners a failed write or a miss answer
//     touched); a kernel dump (EnsureDevice, reconcile) is followed by a run
//     over every bucket. The cost of a lease event is independent of the
//     cluster size, apart from an allocation-free comparison of the list
//     SetPeers gets.
//   - DirectRouting is decided from a snapshot of the main table taken
//     with every kernel dump (longest prefix, then lowest metric: no
//     gateway, on the underlay link), so a peer update makes no kernel
//     query; a reconcile re-decides every peer.
//   - Among peers claiming one VtepMAC (the FDB has one remote per MAC) or
//     one subnet, the peer already programmed keeps it; the others are
//     reported as invalid on every SetPeers until the conflict ends.
//   - Nothing is flushed. A restart lists the kernel (EnsureDevice) and then
//     only writes differences: entries already right are not rewritten and
//     pods keep talking while the agent is down; entries of departed peers
//     are removed. Dumps retry on netlink.ErrDumpInterrupted.
//   - The device's MAC is the one published: a reused device keeps its MAC,
//     a recreated one (deleted by hand, with a NIC flap: flannel#2247, or
//     incompatible) gets the previous MAC back, and a MAC changed behind our
//     back (udev, MACAddressPolicy: flannel#1155) is put back.
//
// # Misses
//
// The kernel reports an L3 miss (RTM_GETNEIGH with an IP and no lladdr) when
// it must resolve an address on the device (app_solicit > 0, set here in the
// ARP table, or for IPv6 in the NDP table: neighbour discovery asks
// userspace before it would solicit) and
// the VXLAN driver reports an L2 miss (AF_BRIDGE, lladdr, no IP) for a unicast
// MAC with no FDB entry (the l2miss flag, which cannot be changed after
// creation, so a device without it is recreated once). The l3miss flag is not
// used: it only fires for ARP requests the driver proxies. A miss is answered
// from the published peer table, with no I/O besides the answer: FDB entry
// first, then the neighbour entry, because the neighbour write releases the
// packets the kernel queued for it (up to unres_qlen) and they must find the
// FDB entry. An L2 miss drops its packet;
// an L3 miss loses nothing when answered in time.
//
// flannel dropped its miss-driven design for static entries: with the
// kernel state depending on a live daemon, a crashed or restarting flanneld
// meant timeouts, and misses were lost or cost first packets (flannel#172,
// #414). Here misses are a repair path only in the default proactive mode:
// every entry is programmed up front, a periodic and event-driven reconcile
// restores anything lost, and the subscription is re-established with a
// full resync when it ends (decode error, ENOBUFS).
//
// # On-demand mode
//
// One route for the whole Network, via-less on the device (scope link), so
// the kernel resolves each destination IP itself and asks us. The first miss
// for an IP inside a peer's subnet is answered (FDB, and a non-permanent
// neighbour for that IP) and activates the peer: its regular neighbour, FDB
// and subnet route are programmed (only that peer's entries; answers queued
// together are taken, and their peers programmed, in one go), so later
// destinations in that subnet use the route and do not miss. Kernel state grows with the peers in use, not
// with cluster size. A peer that leaves SetPeers loses all its entries,
// including pod-IP neighbours; a restart adopts the peers found in the
// kernel.
//
// # Concurrency
//
// One mutex, VXLAN.mu, serialises programming: SetPeers, SetAddress,
// EnsureDevice, and Run's reconciles and on-demand activations. The miss
// responder does not take it. It reads the peer table through an
// atomic.Pointer: a published table is never changed; the control side
// edits a copy (copy-on-write shards, so one lease event copies O(1)) and
// publishes it whole before programming, so an answer sees either the old or
// the new peers, never a mix. It reads the device index from an atomic too,
// writes the answer, and notes what it wrote in a journal (a slice under its
// own small mutex, unbounded: nothing is ever dropped). Every programming
// (SetPeers, a reconcile, or the activation Run's control loop does when the
// journal wakes it) first takes the journal: each written entry is recorded
// in the bucket of its owner in the current table, and that owner is diffed
// in the same programming. An answer decided from a peer that changed since
// is therefore repaired at once (its stale entries are not wanted), and
// correctness depends on no queue size; a reconcile would re-derive the
// entries from a kernel dump in any case. Every goroutine Run starts ends
// with its context.
//
// Run subscribes before it lists, as an informer does: its first reconcile
// waits until the link and neighbour subscriptions have been tried, and
// every later successful subscription asks for another, so a change made
// while no subscription existed is always seen by a kernel dump taken after
// one did. Observer.Subscribed reports each subscription (tests wait on it).
//
// # Logs
//
// The agent logs every lease event at Info, so peers added, changed and
// removed, and each write, are logged here at Debug only; Info is kept for
// what only the datapath sees: the device's life, reconciles that had to
// rewrite entries, and peers activated by a miss.
package backend
