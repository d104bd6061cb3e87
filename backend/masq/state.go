package masq

import (
	"fmt"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// inPlace remembers, per network namespace and rule set ("masq", "forward ip", ...),
// that this process has seen weft's rules in place there. It only decides how a later
// absence is logged: as a repair (Warn) rather than a first install (Info).
var inPlace sync.Map

// placeKey identifies a rule set in a network namespace.
type placeKey struct {
	netns uint64 // the namespace's cookie (never reused), or else its inode number
	what  string
}

// placeKeyOf returns the key of what in netnsFd's namespace (0 = the caller's); ok is
// false when the namespace cannot be identified. The key is the namespace's cookie
// (SO_NETNS_COOKIE, Linux 5.14): inode numbers of namespaces are reused as soon as
// one is freed, which made a fresh namespace inherit a dead one's memory. Older
// kernels fall back to the inode number.
func placeKeyOf(netnsFd int, what string) (placeKey, bool) {
	var cookie uint64
	err := inNetns(netnsFd, func() error {
		s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(s)
		cookie, err = unix.GetsockoptUint64(s, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	})
	if err == nil {
		return placeKey{netns: cookie, what: what}, true
	}
	var st unix.Stat_t
	if netnsFd == 0 {
		err = unix.Stat("/proc/thread-self/ns/net", &st)
	} else {
		err = unix.Fstat(netnsFd, &st)
	}
	if err != nil {
		return placeKey{}, false
	}
	return placeKey{netns: st.Ino, what: what}, true
}

// inNetns runs f in the network namespace of netnsFd; 0 runs it on the caller's
// thread. setns moves only one thread: f runs on a new goroutine whose thread stays
// locked and is never handed back, so it ends with the goroutine and no other
// goroutine can ever run in the wrong namespace.
func inNetns(netnsFd int, f func() error) error {
	if netnsFd == 0 {
		return f()
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(netnsFd, unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("enter netns: %w", err)
			return
		}
		done <- f()
	}()
	return <-done
}
