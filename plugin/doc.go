// Package plugin implements weft's CNI plugin: the verbs ADD, DEL, CHECK,
// STATUS and GC that cmd/weft hands to skel.
//
// A pod is attached the way flannel's plugin (bridge + host-local) does it,
// in one binary: the bridge (cni0) gets the gateway, FLANNEL_SUBNET from
// subnet.env (the .1 with the lease's length); the pod gets the next free
// address of that subnet (package ipam, host-local's file layout), a veth pair
// whose node side is on the bridge with hairpin on, and routes via the
// gateway: to the cluster Network always, and a default route when
// isDefaultGateway (the default).
//
// Config (the conflist's plugin object; unknown keys are ignored):
//
//	bridge            "cni0"
//	subnetFile        "/run/flannel/subnet.env"
//	dataDir           "/var/lib/cni/networks"
//	mtu               0: FLANNEL_MTU from subnet.env
//	hairpinMode       true
//	isDefaultGateway  true
//	ipMasq            false; accepted and ignored: weftd masquerades (--ip-masq)
//	ipam              {"ranges":[[{"subnet","rangeStart","rangeEnd","gateway"}]]}:
//	                  one IPv4 range replacing FLANNEL_SUBNET
//	logFile           "": no logging (stdout carries the result)
//
// Pods are IPv4 only: FLANNEL_IPV6_* lines in subnet.env are ignored.
//
// Names: the node-side veth is "veth" + 10 hex digits of SHA-256(container ID,
// ifname), so DEL finds it with no saved state; it carries a tag (below) so
// GC can find it. The pod MAC is 0a:58 + the IPv4 address, the bridge MAC
// 0a:58 + the gateway.
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
//	7    invalid config, naming the key; the bridge carries another subnet's
//	     address while pods are attached; bridge name taken by a non-bridge
//	8    CNI_NETNS cannot be opened
//	11   subnet.env missing, incomplete or not IPv4 ("is weftd running?")
//	50   STATUS: subnet.env not usable, weftd not running (nothing holds
//	     subnetenv.AgentLockFile next to subnet.env) or IPAM directory not writable
//	100  no free address in the range
//	101  CNI_IFNAME already exists in the pod netns
//	102  the attachment exists already (its veth is there): ADD without DEL
//	103  CHECK found a difference (the message names the first one)
//	5    IPAM store I/O failure
//	999  unexpected kernel failure, with context
//
// Invariants: ADD either completes or leaves nothing behind (address
// released, veth deleted); DEL never fails for something missing and needs
// neither the netns nor subnet.env; nothing is written to stdout but the
// result; the plugin never imports etcd, backend or agent.
package plugin
