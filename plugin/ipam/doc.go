// Package ipam is weft's host-local compatible IP address manager.
//
// It hands out addresses from one Range (normally the node's subnet from
// subnet.env) round robin: the search starts right after the last reserved
// address and wraps, so a released address is not reused at once. The
// network address, the broadcast address and the gateway are never handed
// out.
//
// State lives on disk in host-local's layout, so host-local and weft can read
// each other's reservations:
//
//	<dataDir>/<network>/<ip>                 "<containerID>\r\n<ifname>"
//	<dataDir>/<network>/last_reserved_ip.0   the last address handed out
//	<dataDir>/<network>/lock                 flock(2) taken around every change
//
// host-local writes "\r\n" between the container ID and the interface name,
// and compares the whole trimmed file, so weft writes the same bytes; reading
// accepts "\n" too, and a file holding only a container ID (the layout of
// host-local before ifnames were recorded).
//
// Invariants: every change happens under the store lock; the Allocator never
// reserves an address outside its Range; a Store returns every error it meets
// (host-local's disk store swallows some).
package ipam
