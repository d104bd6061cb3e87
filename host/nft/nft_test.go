package nft_test

import (
	"testing"

	"github.com/google/nftables"

	"github.com/weftnet/weft/host"
	"github.com/weftnet/weft/host/nft"
	"github.com/weftnet/weft/test/nettest"
)

// TestConnIsInTheNamespace: a table added through the connection exists in
// the namespace only.
func TestConnIsInTheNamespace(t *testing.T) {
	nettest.Privileged(t)
	n := nettest.NewNS(t, "nft")
	h, err := host.Open(n.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := nft.Conn(h)
	if err != nil {
		t.Fatal(err)
	}
	c.AddTable(&nftables.Table{Name: "weft-nft-test", Family: nftables.TableFamilyIPv4})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	out, err := n.Exec(t, "nft", "list", "tables")
	if err != nil {
		t.Fatalf("nft list tables: %v: %s", err, out)
	}
	if out != "table ip weft-nft-test\n" {
		t.Fatalf("namespace has tables %q", out)
	}
}
