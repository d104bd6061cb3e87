// Package underlay chooses the interface VXLAN packets leave by and the IP address the
// node advertises to its peers (the lease's PublicIP), following flannel's flags:
// --iface (name or IP, repeatable), --iface-regex (on names or IPs, repeatable),
// --iface-can-reach, and --public-ip.
//
// Invariants:
//   - Selectors are tried in a fixed order: every --iface entry in the order given,
//     then every --iface-regex (for each regex, addresses before names, interfaces in
//     index order), then --iface-can-reach. The first match wins.
//   - The default-route interface is used only when no selector is given at all. When
//     selectors are given and none matches, Find fails with a *NotFoundError naming
//     every attempt, rather than silently falling back to the default route: picking
//     the wrong NIC makes every node advertise a useless address (Vagrant's 10.0.2.15).
//   - The underlay IP is an IPv4 global unicast address of the chosen interface (the
//     address that matched, or the route's preferred source, else the first one).
//   - All kernel reads go through the Handle interface (a subset of host.Host),
//     so callers and tests choose the network namespace.
package underlay
