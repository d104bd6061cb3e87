// Package masq installs weft's --ip-masq rules in nftables tables of its own
// ("weft", family ip for the IPv4 Network and ip6 for the IPv6 Network; a dual-stack
// overlay has both), through netlink (google/nftables), never by running the nft
// binary. It also keeps the cluster Network forwardable
// under a FORWARD policy of DROP (--iptables-forward-rules), names the firewall
// chains it cannot make passable, and drops IPv6 router advertisements arriving on
// the VXLAN devices where accept_ra=0 cannot be written (table ip6 weft-ra).
//
// # Masquerade
//
// Each family's table holds one base chain, postrouting (type nat, hook postrouting,
// priority srcnat = 100), with exactly these rules, in this order (Network and Subnet
// of the table's family; multicast is 224.0.0.0/4 or ff00::/8), as flannel writes them
// per family:
//
//  1. meta mark & 0x4000 == 0x4000 return  (kube-proxy marked it; kube-proxy masquerades it)
//  2. udp dport <VXLAN port> return        (never NAT VXLAN outer packets: double NAT and
//     bad checksums, flannel#1279)
//  3. saddr Network daddr Network return   (pod → pod is never NATed)
//  4. saddr Network daddr != multicast masquerade fully-random (pod → outside)
//  5. saddr != Network daddr Subnet return (outside → a pod on this node keeps its source)
//  6. saddr != Network daddr Network masquerade fully-random (outside → a pod elsewhere)
//
// Invariants:
//   - Ensure is a declarative "ensure", per family: it reads each table back and
//     rewrites it only when it differs from the rules wanted; a rewrite is one atomic
//     nftables batch (create, delete and re-create the table), so packets never see a
//     half-built chain and a rule set from a previous run (other Network or Subnet) is
//     gone. The table of a family the Rules no longer have (dual stack → IPv4-only) is
//     deleted; the other family's table is not touched by a change to one.
//   - Ensure is cheap when nothing changed (a few netlink dumps, no write) and then
//     logs only at Debug, so the agent calls it every resync interval: a deleted table,
//     a deleted or flushed chain, a changed, added or deleted rule are repaired within
//     one interval and logged once at Warn with what was wrong. Whether a missing table
//     is a first install (Info) or a repair (Warn) is told by a per-process memory of
//     the namespaces (and families) where the rules were seen in place (state.go).
//   - The table is never removed on shutdown (flannel#2237): pods keep reaching the
//     outside while the agent restarts. Delete exists for explicit cleanup.
//   - Current decodes the rules of both tables from the kernel's expressions, not
//     from comments, and reports ErrDrift when a table is not exactly what Ensure
//     would write (or the two tables disagree on the VXLAN port).
//
// # Forwarding under a FORWARD policy of DROP
//
// Docker sets the iptables FORWARD policy to DROP, which drops pod traffic routed
// between cni0 and flannel.1. nftables evaluates every base chain on a hook and a drop
// in any of them is final, so an accept in weft's own table cannot get a packet past
// another table's drop: the accept has to be in the chain that drops. EnsureForward
// therefore appends two rules per network to iptables-nft's chain (table ip filter for
// the IPv4 Network, ip6 filter for the IPv6 one, chain FORWARD, hook forward), as
// flannel's --iptables-forward-rules does:
//
//	-A FORWARD -s <Network> -m comment --comment "weft: forward from pod network" -j ACCEPT
//	-A FORWARD -d <Network> -m comment --comment "weft: forward to pod network" -j ACCEPT
//
// Encoding: byte for byte what iptables-nft 1.8.9 writes for those commands (checked
// with `nft --debug=netlink list ruleset`): the address as a load of only the prefix's
// bytes and a compare (a whole-address load, mask and compare when the prefix length
// is not a multiple of 8), the comment as an xtables "comment" match (nft_compat; not
// rule userdata: iptables-nft 1.8.9 writes a match and leaves userdata empty), a counter
// and accept. So `iptables -S`, `iptables-save` and iptables-restore see ordinary
// iptables rules, without "incompatible table" or "unsupported" warnings, and the
// comment survives an iptables-save/restore round trip. (nft 1.0.6 shows the match as
// an empty statement; newer nft shows `xt match "comment"`.)
//
// Ownership: a rule whose comment starts with "weft: forward" is weft's; only those are
// ever changed or removed. EnsureForward keeps weft's rules that are exactly right where
// they are, deletes weft's rules that are not (a network no longer given, in either
// family; changed by hand; duplicated) and appends the missing ones, all in one batch,
// then reads back.
// DeleteForward (--iptables-forward-rules=false) removes weft's rules and nothing else.
//
// Append, not insert: an appended accept still gets past the chain's policy, which is
// all Docker's DROP needs (Docker's own FORWARD rules drop only traffic to its own
// bridges). Inserting at the top would override an operator's explicit drop rules (say
// `-A FORWARD -s 10.244.7.0/24 -j DROP`), which weft has no business overriding; flannel
// appends too. The cost: an unconditional drop or reject rule earlier in the chain
// (RHEL's `-A FORWARD -j REJECT --reject-with icmp-host-prohibited`) still wins.
// ForwardBlockers reports exactly that case, so the operator sees it.
//
// No chain, no rules: without an ip filter FORWARD chain nothing in iptables can drop,
// and EnsureForward creates nothing (on a pure-nftables host an ip filter table of
// weft's making would be clutter, and on an iptables-legacy host a confusing second
// firewall). A chain that appears later (Docker starting after weftd) or loses weft's
// rules (iptables-restore, a firewall reload) gets them at the next resync: up to one
// interval of dropped pod traffic.
//
// # What weft cannot fix: ForwardBlockers
//
//   - A base chain on the forward hook in another table with policy drop or an
//     unconditional drop/reject rule (firewalld's `table inet firewalld`, an operator's
//     nftables.conf). weft does not edit other programs' tables: their owner would
//     undo it or be broken by it. ForwardBlockers names such chains (family, table,
//     chain, hook, priority; the rule handle when a rule drops) so the agent can log
//     them and report them on /readyz. A chain whose own rules accept
//     "saddr <prefix>" and "daddr <prefix>" for a prefix covering the Network before
//     anything drops everything is passable and not reported; neither is iptables-nft's
//     FORWARD chain once EnsureForward's accepts are in it.
//   - A legacy iptables (xtables, iptables-legacy) FORWARD chain: it is not nftables,
//     netlink listings do not show it, and EnsureForward does not write xtables blobs.
//     When /proc/net/ip_tables_names (ip6_tables_names) lists "filter" in the
//     namespace, ForwardBlockers reads the table through the IPT_SO_GET_INFO and
//     IPT_SO_GET_ENTRIES getsockopts and reports its FORWARD chain when the policy is
//     DROP and the chain's own rules do not accept the Network both ways. It never asks
//     for a table the kernel does not list, as that would instantiate it. The fix is the
//     operator's: `iptables-legacy -A FORWARD -s/-d <Network> -j ACCEPT`.
//
// ForwardBlockers does not follow jumps, sets or interface matches: a chain that jumps
// to a chain accepting pod traffic can be reported although it passes it, and a rule
// that drops only part of pod traffic is not reported. It is a diagnosis to log.
//
// # Router advertisements on the VXLAN devices: EnsureRADrop
//
// A VXLAN device takes every datagram to its UDP port, whoever sends it, and the
// kernel acts on a router advertisement (RA) arriving on it even with addrgen mode
// none: the node gets a SLAAC address and a default IPv6 route through flannel.1
// when the device's accept_ra is 2, or 1 (the default) with IPv6 forwarding off
// (backend's refuseRouterAdverts; TestRADropTraffic does it). The backend writes
// accept_ra=0, but /proc/sys is read-only in the DaemonSet's unprivileged container
// and netlink cannot set it. EnsureRADrop is the guard that needs only NET_ADMIN:
//
//	table ip6 weft-ra {
//		chain input {
//			type filter hook input priority filter; policy accept;
//			iifname "flannel.1" icmpv6 type nd-router-advert counter drop comment "..."
//			iifname "flannel.1" icmpv6 type nd-redirect counter drop comment "..."
//			(the same two rules for every other device given, e.g. flannel-v6.1)
//		}
//	}
//
// Why so:
//   - Its own table, not "weft": the masquerade code owns the table named "weft" in
//     both ip and ip6 (an IPv6 Network's rules live in ip6 weft), and would report an
//     ip6 weft table of other rules as drift, then delete it. "weft-ra" is never
//     touched by Ensure or Delete, and DeleteRADrop touches nothing else.
//   - The input hook: neighbour discovery runs in icmpv6_rcv, which ip6_input_finish
//     calls after NF_INET_LOCAL_IN, for unicast and multicast (ff02::1) alike. Only
//     locally delivered packets pass the input hook, so forwarded pod traffic never
//     runs the rule. The forward hook would not see an RA to ff02::1 at all
//     (TestRADropTraffic fails with it). A drop in any base chain is final, so an
//     accept in another table cannot undo it.
//   - meta l4proto, not the IPv6 header's next-header field: an RA behind a
//     hop-by-hop options header is acted on too, and only l4proto (which skips
//     extension headers) matches it (TestRADropTraffic sends one). A fragmented RA
//     is caught as well: the first fragment carries the ICMPv6 type and is dropped,
//     so reassembly never completes (and the kernel ignores fragmented neighbour
//     discovery anyway, suppress_frag_ndisc=1).
//   - iifname, not iif: the rule is by device name, so the agent can put it in place
//     before the device exists and it still holds after the device is recreated
//     (new index). Other device names (another VNI, a family added or dropped)
//     replace the rules (Info). The devices are sorted, so the order given does not
//     matter.
//   - Redirects (type 137) too: ndisc acts on them under accept_redirects (1 by
//     default with forwarding off), another sysctl weft cannot write there. weft
//     never needs one on the overlay (its neighbours and routes are static), so the
//     drop costs nothing. Other neighbour discovery (router solicitations, neighbour
//     solicitations and advertisements) passes: it configures nothing on a host, and
//     an IPv6 overlay could need neighbour discovery. Each rule has its own counter:
//     `nft list table ip6 weft-ra` shows what was dropped.
//
// Invariants, as for Ensure: idempotent and cheap when in place (three netlink
// requests: the ip6 table listing, the chain and its rules, none of them a dump
// of other tables' chains, so a large kube-proxy ruleset costs nothing)
// and then nothing is logged above Debug, so the agent calls it every resync
// interval. A deleted table or chain, a flushed chain, a changed, added or deleted
// rule, a changed hook, priority or policy, an added chain or set, or a dormant
// table is replaced in one atomic batch (delete and re-create the table) and logged
// once at Warn with what was wrong; a table that was in place earlier in this
// process and has vanished is a repair too (state.go). It is never removed on
// shutdown: the device outlives the agent. When the agent keeps it in place it sets
// backend.Config.RAGuarded, and the backend logs an unwritable accept_ra at Debug
// instead of warning.
package masq
