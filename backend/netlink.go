package backend

import (
	"errors"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

// Sentinel errors callers may branch on.
var (
	// ErrNoDevice: the VXLAN device has not been ensured yet (call EnsureDevice).
	ErrNoDevice = errors.New("vxlan device not ensured")
	// ErrInvalidPeer: a Peer failed validation; it is skipped.
	ErrInvalidPeer = errors.New("invalid peer")
	// ErrInvalidConfig: Config failed validation in New.
	ErrInvalidConfig = errors.New("invalid backend config")
)

// isLinkNotFound reports whether err means "no such link".
func isLinkNotFound(err error) bool { return host.IsLinkNotFound(err) }

// isGone reports whether a delete failed only because the entry is already
// absent, which for a delete counts as success.
func isGone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) ||
		errors.Is(err, unix.EADDRNOTAVAIL) || isLinkNotFound(err)
}
