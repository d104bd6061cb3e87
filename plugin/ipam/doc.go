// Package ipam is weft's host-local compatible IP address manager.
//
// An Allocator hands out addresses from one Range (normally the node's
// subnet of one family from subnet.env) round robin: the search starts right after the last reserved
// address and wraps, so a released address is not reused at once. The
// network address, the broadcast address and the gateway are never handed
// out.
//
// State lives on disk in host-local's layout, so host-local and weft can read
// each other's reservations:
//
//	<dataDir>/<network>/<ip>                 "<containerID>\r\n<ifname>"
//	<dataDir>/<network>/last_reserved_ip.N   the last address handed out from
//	                                         range N (host-local's index of the
//	                                         range set in ipam.ranges)
//	<dataDir>/<network>/lock                 flock(2) taken around every change
//
// A dual-stack pod has two ranges in one directory, as with host-local given
// two range sets: an IPv4 and an IPv6 address file (IPv6 files are named by
// the address's canonical text, e.g. "fd00:1::2"), each range with its own
// cursor file, one lock for both. Releasing (id, ifname) frees the
// attachment's addresses in every range.
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
