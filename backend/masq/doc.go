// Package masq installs weft's --ip-masq rules in an nftables table of its own
// ("weft", family ip, or ip6 for an IPv6 Network), through netlink (google/nftables),
// never by running the nft binary.
//
// The table holds one base chain, postrouting (type nat, hook postrouting,
// priority srcnat = 100), with exactly these rules, in this order:
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
//   - Ensure is a declarative "ensure": it reads the table back and rewrites it only
//     when it differs from the rules wanted; a rewrite is one atomic nftables batch
//     (create, delete and re-create the table), so packets never see a half-built chain
//     and a rule set from a previous run (other Network or Subnet, other family) is gone.
//   - The table is never removed on shutdown (flannel#2237): pods keep reaching the
//     outside while the agent restarts. Delete exists for explicit cleanup.
//   - Current decodes the rules from the kernel's expressions, not from comments, and
//     reports ErrDrift when the table is not exactly what Ensure would write.
package masq
