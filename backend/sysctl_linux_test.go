package backend

import (
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
	"github.com/weftnet/weft/test/nettest"
)

// Environment of the child process TestReadOnlyProcSys runs.
const (
	roNetNSEnv   = "WEFT_TEST_RO_NETNS"    // the netns to build the device in
	roWarningEnv = "WEFT_TEST_RO_WARNINGS" // warnings expected from two EnsureDevice calls
	roGuardedEnv = "WEFT_TEST_RO_GUARDED"  // "true": Config.RAGuarded
)

// TestReadOnlyProcSys runs EnsureDevice in a child process whose /proc/sys
// is mounted read-only (in a private mount namespace), as in the DaemonSet's
// unprivileged container: no warning when the device already ignores router
// advertisements (IPv6 forwarding on), one when it would act on them, none
// when the agent drops them with nftables (RAGuarded).
func TestReadOnlyProcSys(t *testing.T) {
	if path := os.Getenv(roNetNSEnv); path != "" {
		readOnlyProcSysChild(t, path)
		return
	}
	nettest.Privileged(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare(1)")
	}
	for _, tc := range []struct {
		name       string
		forwarding string // net.ipv6.conf.default.forwarding, inherited by the new device
		guarded    bool   // Config.RAGuarded
		warnings   int
	}{
		{"RAs accepted", "0", false, 1},
		{"RAs ignored (IPv6 forwarding)", "1", false, 0},
		{"RAs accepted but guarded by nftables", "0", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := nettest.NewNS(t, "bkro")
			h := nettest.Handle(t, n.NetNS)
			if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth1"}); err != nil {
				t.Fatalf("add eth0: %v", err)
			}
			eth0, err := h.LinkByName("eth0")
			if err == nil {
				err = h.AddrAdd(eth0, &netlink.Addr{IPNet: host.PrefixIPNet(netip.MustParsePrefix("198.18.0.1/24"))})
			}
			if err == nil {
				err = h.LinkSetUp(eth0)
			}
			if err != nil {
				t.Fatalf("set up eth0: %v", err)
			}
			if out, err := n.Exec(t, "sysctl", "-qw", "net.ipv6.conf.default.forwarding="+tc.forwarding); err != nil {
				t.Fatalf("sysctl: %v: %s", err, out)
			}
			cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
				`mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"`, "sh",
				os.Args[0], "-test.run", "^TestReadOnlyProcSys$", "-test.count", "1", "-test.v")
			cmd.Env = append(os.Environ(), roNetNSEnv+"="+n.Path, roWarningEnv+"="+strconv.Itoa(tc.warnings),
				roGuardedEnv+"="+strconv.FormatBool(tc.guarded))
			out, err := cmd.CombinedOutput()
			t.Logf("child:\n%s", out)
			if err != nil {
				t.Fatalf("child: %v", err)
			}
		})
	}
}

// readOnlyProcSysChild is the child's half: /proc/sys must be read-only.
func readOnlyProcSysChild(t *testing.T, path string) {
	want, err := strconv.Atoi(os.Getenv(roWarningEnv))
	if err != nil {
		t.Fatalf("%s: %v", roWarningEnv, err)
	}
	guarded, err := strconv.ParseBool(os.Getenv(roGuardedEnv))
	if err != nil {
		t.Fatalf("%s: %v", roGuardedEnv, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/proc/sys", &st); err != nil || st.Flags&unix.ST_RDONLY == 0 {
		t.Fatalf("/proc/sys is not read-only here (flags %#x, %v)", st.Flags, err)
	}
	h, err := host.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	lb := &logBuf{}
	log := slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	v, err := New(h, Config{
		Device:         DeviceConfig{LocalIP: netip.MustParseAddr("198.18.0.1"), UnderlayIndex: eth0.Attrs().Index},
		Network:        netip.MustParsePrefix("10.244.0.0/16"),
		ResyncInterval: time.Hour,
		RAGuarded:      guarded,
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := v.EnsureDevice(); err != nil {
			t.Fatalf("EnsureDevice with /proc/sys read-only: %v", err)
		}
	}
	t.Logf("log:\n%s", strings.Join(lb.lines(), "\n"))
	if w := lb.lines("level=WARN"); len(w) != want {
		t.Errorf("%d warnings, want %d:\n%s", len(w), want, strings.Join(w, "\n"))
	}
	// app_solicit goes over rtnetlink, so it is set despite /proc/sys.
	out, err := exec.Command("ip", "netns", "exec", strings.TrimPrefix(path, "/run/netns/"),
		"cat", "/proc/sys/net/ipv4/neigh/flannel.1/app_solicit").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "3" {
		t.Errorf("app_solicit = %q (%v), want 3", out, err)
	}
}
