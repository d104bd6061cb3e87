// Package underlay chooses the interface VXLAN packets leave by and the addresses the
// node advertises to its peers (the lease's PublicIP and PublicIPv6), following
// flannel's flags: --iface (name or IPv4/IPv6 address, repeatable), --iface-regex (on
// names or addresses, repeatable), --iface-can-reach (an IPv4 or IPv6 target),
// --public-ip and --public-ipv6.
//
// Invariants:
//   - Selectors are tried in a fixed order: every --iface entry in the order given,
//     then every --iface-regex (for each regex, addresses before names, interfaces in
//     index order, IPv4 addresses before IPv6 ones), then --iface-can-reach. The first
//     match wins.
//   - Without any selector, an interface holding --public-ip (else --public-ipv6) is
//     used; else the interface of the IPv4 default route, else that of the IPv6
//     default route (an IPv6-only node has no IPv4 default route). When selectors are
//     given and none matches, Find fails with a *NotFoundError naming every attempt,
//     rather than silently falling back to the default route: picking the wrong NIC
//     makes every node advertise a useless address (Vagrant's 10.0.2.15).
//   - An interface matches when it has a usable address of either family; Find
//     returns both families' addresses when present, and the caller checks the
//     families its network config needs.
//   - Per family, the address is the one that matched (or the route's preferred
//     source) when usable, else the first usable one. IPv4: global unicast. IPv6:
//     global unicast scope, and not temporary (privacy extensions; they change
//     daily), deprecated (preferred lifetime 0), tentative or DAD-failed (flannel
//     picked such addresses: flannel#2045, #2293); permanent (static) addresses come
//     before dynamic (SLAAC, DHCPv6) ones. Every skipped IPv6 address of the chosen
//     interface is returned with its reason (Underlay.SkippedIPv6), and a miss names
//     them, so the agent can say why a node has no IPv6 underlay address.
//   - All kernel reads go through the Handle interface (a subset of host.Host),
//     so callers and tests choose the network namespace.
package underlay
