// Package host is the one place that knows network namespaces and netlink
// sockets. Everything weft does to a node's network stack goes through a
// Host: links, addresses, neighbours and FDB entries, routes, neighbour-table
// parameters, sysctls and event subscriptions, and (through host/nft) the
// nftables connection.
//
// A namespace is opened once, with Open: "" is the caller's own namespace
// (what the binaries use), a path is another one, kept open by file
// descriptor (what tests use). Nothing outside this package enters a
// namespace, opens a netlink handle or calls netlink's package-level dump
// or subscribe functions.
//
// Every dump (LinkList, AddrList, NeighList, RouteListFiltered) is retried
// here while the kernel reports it interrupted (NLM_F_DUMP_INTR), so callers
// never see a partial table.
//
// *NS also offers what only the CNI plugin needs (veth_linux.go): adding
// addresses and routes that must not exist yet, bridge port flags, and three
// link requests built by hand so that a pod's ADD and DEL make as few round
// trips as possible, among them a veth pair whose peer is created directly
// in the pod's namespace.
//
// Fake implements Host in memory, behaving like the kernel where weft depends
// on it and recording every write as one line, so the datapath's tests check
// the operations production performs.
//
// The package sits at the top of the module, not under backend, because the
// backend, backend/underlay, backend/masq, the agent and the CNI plugin all
// use it, and the plugin must not import the backend. For the same reason the
// nftables connection lives in the subpackage host/nft: the plugin links
// host without google/nftables and its netlink library.
package host
