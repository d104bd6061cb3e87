package masq

import (
	"sync"
)

// Host is the network namespace masq works in; *host.NS satisfies it.
type Host interface {
	// Do runs f on a thread inside the namespace (legacy iptables'
	// getsockopt and /proc/thread-self/net read the calling thread's).
	Do(f func() error) error
	// ID identifies the namespace (see placeKey).
	ID() (uint64, error)
	// Fd is the namespace's descriptor for the nftables connection, -1 for
	// the caller's own.
	Fd() int
}

// inPlace remembers, per network namespace and rule set ("masq", "forward ip", ...),
// that this process has seen weft's rules in place there. It only decides how a later
// absence is logged: as a repair (Warn) rather than a first install (Info).
var inPlace sync.Map

// placeKey identifies a rule set in a network namespace.
type placeKey struct {
	netns uint64 // the namespace's cookie (never reused), or else its inode number
	what  string
}

// placeKeyOf returns the key of what in h; ok is false when the namespace
// cannot be identified. The key is the namespace's cookie (SO_NETNS_COOKIE,
// Linux 5.14): inode numbers of namespaces are reused as soon as one is
// freed, which made a fresh namespace inherit a dead one's memory. Older
// kernels fall back to the inode number (host.NS.ID).
func placeKeyOf(h Host, what string) (placeKey, bool) {
	id, err := h.ID()
	if err != nil {
		return placeKey{}, false
	}
	return placeKey{netns: id, what: what}, true
}
