package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/lease/etcdstore"
)

// subnetRow is one line of `weftd subnets`.
type subnetRow struct {
	Subnet      string `json:"subnet"` // "" when the key of a corrupt entry does not parse
	IPv6Subnet  string `json:"ipv6Subnet,omitempty"`
	PublicIP    string `json:"publicIP"`
	VtepMAC     string `json:"vtepMAC"`
	PublicIPv6  string `json:"publicIPv6,omitempty"`
	VtepMACv6   string `json:"vtepMACv6,omitempty"`
	Node        string `json:"node,omitempty"`
	TTLSeconds  int64  `json:"ttlSeconds"` // -1 for a reservation (and unknown)
	Reservation bool   `json:"reservation"`
	Key         string `json:"key"`
	// Corrupt says why agents skip this key (a key or value that does not
	// parse, a lease of another backend); its block is never handed out.
	Corrupt string `json:"corrupt,omitempty"`
}

func newSubnetsCmd(g *globalFlags) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "subnets",
		Short: "List the subnet leases in etcd, and the keys agents skip as corrupt",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %q: want table or json", output)
			}
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			conn, err := g.openEtcd(cmd.Context(), log, cmd.ErrOrStderr(), etcdHooks{})
			if err != nil {
				return err
			}
			defer conn.Close()
			entries, err := conn.store.Inspect(cmd.Context())
			if err != nil {
				return err // "list leases under <prefix>/subnets/: ..."
			}
			rows := subnetRows(entries, time.Now())
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			return printSubnets(cmd.OutOrStdout(), rows)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json (corrupt keys carry \"corrupt\": why)")
	return cmd
}

// subnetRows sorts the usable leases by subnet, then the corrupt keys by key.
func subnetRows(entries []etcdstore.Entry, now time.Time) []subnetRow {
	entries = slices.Clone(entries)
	slices.SortStableFunc(entries, func(a, b etcdstore.Entry) int {
		if (a.Err == nil) != (b.Err == nil) {
			if a.Err == nil {
				return -1
			}
			return 1
		}
		if a.Err != nil {
			return strings.Compare(a.Key, b.Key)
		}
		if c := a.Lease.Subnet.Addr().Compare(b.Lease.Subnet.Addr()); c != 0 {
			return c
		}
		return a.Lease.IPv6Subnet.Addr().Compare(b.Lease.IPv6Subnet.Addr())
	})
	rows := make([]subnetRow, 0, len(entries))
	for _, e := range entries {
		l := e.Lease
		r := subnetRow{Key: e.Key, Node: l.Attrs.NodeName, Reservation: l.Reservation, TTLSeconds: -1}
		if l.Subnet.IsValid() {
			r.Subnet = l.Subnet.String()
		}
		if l.IPv6Subnet.IsValid() {
			r.IPv6Subnet = l.IPv6Subnet.String()
		}
		if l.Attrs.PublicIP.IsValid() {
			r.PublicIP = l.Attrs.PublicIP.String()
		}
		if d := l.Attrs.BackendData; d != nil {
			r.VtepMAC = d.VtepMAC.String()
		}
		if l.Attrs.PublicIPv6.IsValid() {
			r.PublicIPv6 = l.Attrs.PublicIPv6.String()
		}
		if d := l.Attrs.BackendV6Data; d != nil {
			r.VtepMACv6 = d.VtepMAC.String()
		}
		if !l.Reservation && !l.Expiration.IsZero() {
			r.TTLSeconds = int64(l.Expiration.Sub(now).Round(time.Second) / time.Second)
		}
		if e.Err != nil {
			r.Corrupt = e.Err.Error()
		}
		rows = append(rows, r)
	}
	return rows
}

// printSubnets prints the leases as a table, then the corrupt keys with why
// and their count (nothing when there is none).
func printSubnets(w io.Writer, rows []subnetRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	// The IPv6 columns only when a lease has an IPv6 part.
	v6 := slices.ContainsFunc(rows, func(r subnetRow) bool { return r.IPv6Subnet != "" && r.Corrupt == "" })
	if v6 {
		fmt.Fprintln(tw, "SUBNET\tIPV6 SUBNET\tPUBLIC IP\tPUBLIC IPV6\tVTEP MAC\tVTEP MAC V6\tNODE\tTTL\tRESERVATION")
	} else {
		fmt.Fprintln(tw, "SUBNET\tPUBLIC IP\tVTEP MAC\tNODE\tTTL\tRESERVATION")
	}
	var corrupt []subnetRow
	for _, r := range rows {
		if r.Corrupt != "" {
			corrupt = append(corrupt, r)
			continue
		}
		ttl, res := "-", "no"
		if r.Reservation {
			res = "yes"
		} else if r.TTLSeconds >= 0 {
			ttl = (time.Duration(r.TTLSeconds) * time.Second).String()
		}
		if v6 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", or(r.Subnet), or(r.IPv6Subnet), or(r.PublicIP), or(r.PublicIPv6),
				or(r.VtepMAC), or(r.VtepMACv6), r.Node, ttl, res)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Subnet, r.PublicIP, r.VtepMAC, r.Node, ttl, res)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(corrupt) == 0 {
		return nil
	}
	noun := "keys"
	if len(corrupt) == 1 {
		noun = "key"
	}
	fmt.Fprintf(w, "\n%d corrupt %s under the subnets prefix (agents skip them; their blocks are never handed out):\n", len(corrupt), noun)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tCORRUPT")
	for _, r := range corrupt {
		fmt.Fprintf(tw, "%s\t%s\n", r.Key, r.Corrupt)
	}
	return tw.Flush()
}

// or shows an absent field of a dual-stack table as "-".
func or(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
