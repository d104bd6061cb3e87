package backend

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

// logBuf collects a text log; safe for concurrent use.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the logged lines that contain every one of subs.
func (b *logBuf) lines(subs ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var res []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		ok := l != ""
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			res = append(res, l)
		}
	}
	return res
}

// newLoggedVXLAN is newFakeVXLAN (proactive) logging at Debug into a logBuf.
func newLoggedVXLAN(t *testing.T, f *host.Fake, port int) (*VXLAN, *logBuf) {
	t.Helper()
	return newLoggedVXLANWith(t, f, func(c *Config) { c.Device.Port = port })
}

// newLoggedVXLANWith is newLoggedVXLAN with the Config changed by edit.
func newLoggedVXLANWith(t *testing.T, f *host.Fake, edit func(*Config)) (*VXLAN, *logBuf) {
	t.Helper()
	var idx int
	if l, err := f.LinkByName("eth0"); err == nil {
		idx = l.Attrs().Index
	} else {
		idx = f.AddUnderlay("eth0", 1500, netip.MustParsePrefix("198.18.0.1/24"))
	}
	lb := &logBuf{}
	log := slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := Config{
		Device:  DeviceConfig{LocalIP: netip.MustParseAddr("198.18.0.1"), UnderlayIndex: idx},
		Network: netip.MustParsePrefix("10.244.0.0/16"),
	}
	edit(&cfg)
	v, err := New(f, cfg, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	v.device.newMAC = func() (net.HardwareAddr, error) { return net.HardwareAddr{0x0e, 0, 0, 0, 0, 1}, nil }
	return v, lb
}

// readOnlyIPv6 fails every write under /proc/sys/net/ipv6 with EROFS, as in
// a container that is not privileged. (app_solicit goes over rtnetlink, a
// neighbour-table write, so it stays writable.)
func readOnlyIPv6(op string) error {
	if strings.HasPrefix(op, "sysctl net/ipv6/") {
		return unix.EROFS
	}
	return nil
}

// TestReadOnlyProcSysOverFake: with /proc/sys read-only, a device that
// already ignores router advertisements gives no warning; one that would
// act on them gives one warning, not one per EnsureDevice or reconcile,
// unless the agent drops them with nftables (RAGuarded): then none.
func TestReadOnlyProcSysOverFake(t *testing.T) {
	t.Run("RAs already ignored", func(t *testing.T) {
		f := host.NewFake()
		v, _ := newLoggedVXLAN(t, f, 0)
		if _, err := v.EnsureDevice(); err != nil { // a privileged run set accept_ra=0
			t.Fatal(err)
		}
		f.Fail = readOnlyIPv6
		v2, log := newLoggedVXLAN(t, f, 0) // restarted in an unprivileged pod
		for range 2 {
			if _, err := v2.EnsureDevice(); err != nil {
				t.Fatalf("EnsureDevice with /proc/sys read-only: %v", err)
			}
		}
		if err := v2.reconcile(); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
		if w := log.lines("level=WARN"); len(w) != 0 {
			t.Errorf("warnings with /proc/sys read-only and accept_ra already 0:\n%s", strings.Join(w, "\n"))
		}
	})
	t.Run("RAs accepted", func(t *testing.T) {
		f := host.NewFake()
		f.Fail = readOnlyIPv6
		v, log := newLoggedVXLAN(t, f, 0)
		for range 2 {
			if _, err := v.EnsureDevice(); err != nil {
				t.Fatalf("EnsureDevice with /proc/sys read-only: %v", err)
			}
		}
		if err := v.reconcile(); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
		if w := log.lines("level=WARN"); len(w) != 1 || !strings.Contains(w[0], "accept_ra") {
			t.Errorf("warnings with /proc/sys read-only and the device accepting RAs:\n%s\nwant one, naming accept_ra", strings.Join(w, "\n"))
		}
	})
	t.Run("RAs accepted but guarded by nftables", func(t *testing.T) {
		f := host.NewFake()
		f.Fail = readOnlyIPv6
		v, log := newLoggedVXLANWith(t, f, func(c *Config) { c.RAGuarded = true })
		for range 2 {
			if _, err := v.EnsureDevice(); err != nil {
				t.Fatalf("EnsureDevice with /proc/sys read-only: %v", err)
			}
		}
		if err := v.reconcile(); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
		if w := log.lines("level=WARN"); len(w) != 0 {
			t.Errorf("warnings with /proc/sys read-only and RAs dropped by nftables:\n%s", strings.Join(w, "\n"))
		}
		if d := log.lines("level=DEBUG", "cannot set accept_ra", "router_adverts_accepted=true", "guarded_by_nftables=true"); len(d) == 0 {
			t.Errorf("no Debug record of the unwritable accept_ra; log:\n%s", strings.Join(log.lines(), "\n"))
		}
	})
}

// TestCreatedDeviceLogsEffectivePort: Port 0 means 8472, and the log says so.
func TestCreatedDeviceLogsEffectivePort(t *testing.T) {
	v, log := newLoggedVXLAN(t, host.NewFake(), 0)
	if _, err := v.EnsureDevice(); err != nil {
		t.Fatal(err)
	}
	if l := log.lines(`msg="created vxlan device"`); len(l) != 1 || !strings.Contains(l[0], " port=8472 ") {
		t.Errorf("created-device log: %q, want port=8472", l)
	}
}
