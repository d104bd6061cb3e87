package underlay

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"
)

// FindSettled is Find, tried again while the only thing keeping an IPv6
// address from the underlay is duplicate address detection in progress: a
// tentative address becomes usable within a second or two (right after boot,
// or after the address was added), and an agent started in that window
// would otherwise run without IPv6 or not at all. It gives up after wait
// (or when ctx ends) and returns what Find says then. The wait is logged
// once.
func FindSettled(ctx context.Context, nl Handle, o Options, wait time.Duration, log *slog.Logger) (Underlay, error) {
	deadline := time.Now().Add(wait)
	logged := false
	for {
		u, err := Find(nl, o)
		if !settling(u, err) || !time.Now().Before(deadline) {
			return u, err
		}
		if !logged && log != nil {
			log.Info("waiting for duplicate address detection on the underlay's IPv6 addresses", "max", wait, "iface", u.Name)
			logged = true
		}
		select {
		case <-ctx.Done():
			return u, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// settling reports whether Find's answer lacks IPv6 only because an
// address is tentative.
func settling(u Underlay, err error) bool {
	if err != nil {
		var nf *NotFoundError
		return errors.As(err, &nf) && strings.Contains(nf.Error(), ReasonTentative)
	}
	if u.IPv6.IsValid() {
		return false
	}
	for _, s := range u.SkippedIPv6 {
		if s.Reason == ReasonTentative {
			return true
		}
	}
	return false
}
