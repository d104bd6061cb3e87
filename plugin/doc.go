// Package plugin implements weft's CNI plugin: the verbs ADD, DEL, CHECK,
// STATUS and GC that cmd/weft hands to skel.
//
// A pod is attached the way flannel's plugin (bridge + host-local) does it,
// in one binary, with one address per family subnet.env has: IPv4
// (FLANNEL_NETWORK/FLANNEL_SUBNET), IPv6 (FLANNEL_IPV6_NETWORK/
// FLANNEL_IPV6_SUBNET) or both. Per family, the bridge (cni0) gets the
// gateway, the subnet.env value (the .1 or ::1 with the lease's length); the
// pod gets the next free address of that subnet (package ipam, host-local's
// file layout; pods from .2 or ::2 up) and routes via that gateway: to the
// family's cluster Network always, and a default route when isDefaultGateway
// (the default). The pod's veth pair has its node side on the bridge with
// hairpin on. Forwarding is turned on in the node's netns per family
// (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding; the latter also makes
// the node's interfaces ignore router advertisements unless their accept_ra
// is 2); a sysctl already at 1 is not written, so a read-only /proc/sys is
// fine then, and otherwise the error (999) names the sysctl. IPv6 addresses
// are never tentative: the bridge's and the pod's carry IFA_F_NODAD, and
// the pod interface's accept_dad is 0 (best effort: a read-only /proc/sys is
// tolerated). A bridge weft creates gets addrgen mode none and its EUI-64
// link-local address from weft, with IFA_F_NODAD: the node solicits pods'
// neighbours from it for forwarded packets, and sends nothing while it is
// tentative. Both ends of the veth and the bridge get FLANNEL_MTU, which
// must be at least 1280 when pods get IPv6.
//
// The result (every supported version) lists one IP per family, IPv4
// first, each with its gateway, and the routes of each family. CHECK
// verifies every address (present, not DAD-failed) and route of prevResult,
// each reservation and each gateway on the bridge. DEL and GC release an
// attachment's addresses of every family (DEL needs no subnet.env).
//
// IPAM state: both families' reservations live in one directory per
// network, one file per address; the cursor of the pod's N-th family (IPv4
// first) is last_reserved_ip.N, which is host-local's for flannel's
// ipam.ranges ([[IPv4], [IPv6]] on a dual-stack node, [[IPv6]] on an
// IPv6-only one), so weft and host-local read each other's stores.
//
// Names: the node-side veth is "veth" + 10 hex digits of SHA-256(container ID,
// ifname), so DEL finds it with no saved state; it carries a tag (below) so
// GC can find it. The pod MAC is 0a:58 + the IPv4 address, the bridge MAC
// 0a:58 + the IPv4 gateway. On an IPv6-only node they are 0a:58 + the last
// four bytes of the pod's IPv6 address and of the IPv6 gateway: as for IPv4,
// a reused address brings back its MAC, and pods of one node differ as long
// as the range spans under 2^32 addresses from its start (the allocator
// hands them out in order).
//
// Veth tags: the node-side veth's alias is
// "weft@<network>:<containerID>/<ifname>", network being the conflist's
// name. Network names and container IDs are made of [a-zA-Z0-9_.-] (the
// spec's charset: config validation and skel enforce it) and ifnames contain
// neither ":" nor "/", so the tag parses back unambiguously. An attachment
// whose tag would exceed the kernel's 255 bytes (a network name over 169
// characters with a 64-character container ID and a 15-character ifname)
// gets no tag rather than a cut one, which would name another attachment.
// The veth's name leaves the network out: a pod interface (container ID,
// ifname) exists once on the node whatever network made it, and DEL must
// find veths made by earlier releases.
//
// GC is per network (spec 1.1): it releases only reservations in
// <dataDir>/<name>/, and deletes a veth only when
//
//   - its tag names this network and an attachment that is not valid, or
//   - it is named after a stale reservation of this network, which GC is
//     releasing, and its tag names neither another network nor another
//     attachment (it has this network's tag, a legacy tag, or none).
//
// Releases before the network was in the tag wrote "weft:<containerID>/<ifname>".
// On a bridge shared by several networks such a veth may be any network's,
// so GC never deletes it on its tag alone: only through the second rule,
// where the reservation in this network's own directory names that
// container ID and ifname, which proves it is this network's (the veth's
// name derives from the same pair). A legacy-tagged veth whose reservation
// is already gone is left to DEL, which finds it by name: a leaked veth
// rather than another network's pod cut off. The new prefix differs from the
// legacy one on purpose: an older release (after a downgrade) does not
// recognise new tags and leaves them alone, where it would read
// "weft:<network>:<containerID>/<ifname>" as a stale attachment of its own.
//
// Networks sharing a bridge each allocate from their own IPAM directory,
// blind to the other's reservations: give them disjoint ranges of the node's
// subnet (ipam.ranges rangeStart/rangeEnd), or they hand out the same
// addresses.
//
// Errors are *types.Error:
//
//	1    config version not supported (skel)
//	6    config or prevResult is not valid JSON
//	7    invalid config, naming the key; an ipam.ranges range of a family
//	     subnet.env does not have; mtu below 1280 with IPv6; the bridge
//	     carries another subnet's address of a family while pods are
//	     attached; bridge name taken by a non-bridge
//	8    CNI_NETNS cannot be opened
//	11   subnet.env missing or incomplete, or a broken pair, named: the IPv4
//	     pair not IPv4, the IPv6 pair not IPv6 or its subnet outside its
//	     network; FLANNEL_MTU below 1280 with IPv6 ("is weftd running?")
//	50   STATUS: subnet.env not usable (as for 11, or disagreeing with the
//	     config as for 7), weftd not running (nothing holds
//	     subnetenv.AgentLockFile next to subnet.env) or IPAM directory not writable
//	100  no free address in a family's range (the message names the family)
//	101  CNI_IFNAME already exists in the pod netns
//	102  the attachment exists already (its veth is there): ADD without DEL
//	103  CHECK found a difference (the message names the first one)
//	5    IPAM store I/O failure
//	999  unexpected kernel failure, with context
//
// Only the families in subnet.env are managed: an address of a family
// subnet.env no longer has stays on the bridge.
//
// Invariants: ADD either completes or leaves nothing behind (addresses of
// every family released, veth deleted); DEL never fails for something missing and needs
// neither the netns nor subnet.env; nothing is written to stdout but the
// result; the plugin never imports etcd, backend or agent.
package plugin
