package plugin

import (
	"strings"
	"testing"
)

// TestVethAlias: the node-side veth's tag names the network, container ID
// and ifname; it parses back, legacy unscoped tags parse with no network,
// and an attachment too long for the kernel's 255 bytes gets no tag.
func TestVethAlias(t *testing.T) {
	id64 := strings.Repeat("0123456789abcdef", 4)
	if got, want := vethAlias("cbr0", "ctr-a", "eth0"), "weft@cbr0:ctr-a/eth0"; got != want {
		t.Fatalf("vethAlias = %q, want %q", got, want)
	}
	// The longest network name that fits next to a 64-character ID and a
	// 15-character ifname: 255 - len("weft@") - 1 - 64 - 1 - 15.
	longest := strings.Repeat("n", 169)
	if a := vethAlias(longest, id64, "eth0.123456789a"); len(a) != 255 {
		t.Fatalf("alias of %d bytes for a name that fits exactly", len(a))
	}
	if a := vethAlias(longest+"x", id64, "eth0.123456789a"); a != "" {
		t.Fatalf("alias %q (%d bytes) over the kernel's limit: want none rather than a cut one", a, len(a))
	}

	for _, tt := range []struct {
		alias string
		want  vethTag
		ok    bool
	}{
		{"weft@cbr0:ctr-a/eth0", vethTag{network: "cbr0", containerID: "ctr-a", ifname: "eth0"}, true},
		{"weft@my-net_1.b:" + id64 + "/net1", vethTag{network: "my-net_1.b", containerID: id64, ifname: "net1"}, true},
		{vethAlias(longest, id64, "eth0.123456789a"), vethTag{network: longest, containerID: id64, ifname: "eth0.123456789a"}, true},
		// Written by releases before the network name was in the tag.
		{"weft:ctr-a/eth0", vethTag{containerID: "ctr-a", ifname: "eth0"}, true},
		{"weft:" + id64 + "/net1", vethTag{containerID: id64, ifname: "net1"}, true},
		// Not a weft tag, or malformed: no attachment.
		{"", vethTag{}, false},
		{"something else", vethTag{}, false},
		{"weft", vethTag{}, false},
		{"weft:", vethTag{}, false},
		{"weft:ctr-a", vethTag{}, false},
		{"weft:/eth0", vethTag{}, false},
		{"weft:ctr-a/", vethTag{}, false},
		{"weft:a/b/eth0", vethTag{}, false},
		{"weft@", vethTag{}, false},
		{"weft@cbr0", vethTag{}, false},
		{"weft@cbr0:ctr-a", vethTag{}, false},
		{"weft@:ctr-a/eth0", vethTag{}, false},
		{"weft@cbr0:/eth0", vethTag{}, false},
		{"weft@cbr0:ctr-a/", vethTag{}, false},
		{"weft@cbr0:a:b/eth0", vethTag{}, false},
		{"weft@cb/r0:ctr-a/eth0", vethTag{}, false},
		{"Weft@cbr0:ctr-a/eth0", vethTag{}, false},
	} {
		got, ok := parseVethAlias(tt.alias)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseVethAlias(%q) = %+v, %t; want %+v, %t", tt.alias, got, ok, tt.want, tt.ok)
		}
	}
}

// TestReservedVethOwner: GC of a stale reservation deletes the veth named
// after it only when the veth's tag does not say it is another network's or
// another attachment's.
func TestReservedVethOwner(t *testing.T) {
	for _, tt := range []struct {
		alias string
		want  bool
	}{
		{"weft@cbr0:ctr-a/eth0", true},
		{"weft:ctr-a/eth0", true}, // legacy: the reservation in cbr0's directory is the proof
		{"", true},                // too long for a tag: the name and the reservation are all there is
		{"set by hand", true},
		{"weft@other:ctr-a/eth0", false},
		{"weft@cbr0:ctr-b/eth0", false}, // a name collision, not this attachment
		{"weft@cbr0:ctr-a/eth1", false},
		{"weft:ctr-b/eth0", false},
	} {
		if got := reservedVethIsOurs(tt.alias, "cbr0", "ctr-a", "eth0"); got != tt.want {
			t.Errorf("reservedVethIsOurs(%q, cbr0, ctr-a, eth0) = %t, want %t", tt.alias, got, tt.want)
		}
	}
}

// FuzzVethAlias: a tag parses back to what vethAlias was given, and
// whatever parses as a scoped tag is exactly what vethAlias writes for it.
func FuzzVethAlias(f *testing.F) {
	for _, s := range []string{"weft@cbr0:ctr-a/eth0", "weft:ctr-a/eth0", "weft@a:b:c/d", "weft@a/b:c/d", ""} {
		f.Add(s, "cbr0", "ctr-a", "eth0")
	}
	f.Fuzz(func(t *testing.T, alias, network, id, ifname string) {
		if tag, ok := parseVethAlias(alias); ok && tag.network != "" {
			if back := vethAlias(tag.network, tag.containerID, tag.ifname); back != alias && len(alias) <= maxAlias {
				t.Fatalf("%q parses as %+v, which is written %q", alias, tag, back)
			}
		}
		if !networkName.MatchString(network) || !containerIDChars.MatchString(id) || validIfName(ifname) != nil {
			return
		}
		a := vethAlias(network, id, ifname)
		if len(a) > maxAlias {
			t.Fatalf("alias of %d bytes", len(a))
		}
		if a == "" {
			return
		}
		if tag, ok := parseVethAlias(a); !ok || tag != (vethTag{network, id, ifname}) {
			t.Fatalf("%q parses as %+v, %t; want %s %s %s", a, tag, ok, network, id, ifname)
		}
	})
}
