// Package nft opens nftables connections in a host namespace. It is apart
// from package host so that what links host without needing nftables (the
// CNI plugin) does not link google/nftables either.
package nft

import (
	"fmt"

	"github.com/google/nftables"
)

// Namespace is where the connection goes; *host.NS satisfies it.
type Namespace interface {
	// Fd is the namespace's descriptor, or -1 for the caller's own.
	Fd() int
}

// Conn opens an nftables connection in ns.
func Conn(ns Namespace) (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if fd := ns.Fd(); fd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(fd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink connection: %w", err)
	}
	return c, nil
}
