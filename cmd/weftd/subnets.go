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
		return a.Lease.Subnet.Addr().Compare(b.Lease.Subnet.Addr())
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
	fmt.Fprintln(tw, "SUBNET\tPUBLIC IP\tVTEP MAC\tNODE\tTTL\tRESERVATION")
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
