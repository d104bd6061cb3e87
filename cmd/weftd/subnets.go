package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/weftnet/weft/lease"
)

// subnetRow is one line of `weftd subnets`.
type subnetRow struct {
	Subnet      string `json:"subnet"`
	IPv6Subnet  string `json:"ipv6Subnet,omitempty"`
	PublicIP    string `json:"publicIP"`
	VtepMAC     string `json:"vtepMAC"`
	Node        string `json:"node,omitempty"`
	TTLSeconds  int64  `json:"ttlSeconds"` // -1 for a reservation
	Reservation bool   `json:"reservation"`
}

func newSubnetsCmd(g *globalFlags) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "subnets",
		Short: "List the subnet leases in etcd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %q: want table or json", output)
			}
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			conn, err := g.openEtcd(cmd.Context(), log, cmd.ErrOrStderr(), nil)
			if err != nil {
				return err
			}
			defer conn.Close()
			leases, err := conn.store.List(cmd.Context())
			if err != nil {
				return fmt.Errorf("list leases: %w", err)
			}
			fillExpiration(cmd.Context(), conn.cli, leases)
			rows := subnetRows(leases, time.Now())
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			return printSubnets(cmd.OutOrStdout(), rows)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// fillExpiration asks etcd for the TTL left of each lease. The agent never does
// this per peer (O(N) round trips); a one-shot listing for a human may.
func fillExpiration(ctx context.Context, cli *clientv3.Client, leases []lease.Lease) {
	for i := range leases {
		if leases[i].Reservation || leases[i].LeaseID == 0 {
			continue
		}
		resp, err := cli.TimeToLive(ctx, clientv3.LeaseID(leases[i].LeaseID))
		if err == nil && resp.TTL >= 0 {
			leases[i].Expiration = time.Now().Add(time.Duration(resp.TTL) * time.Second)
		}
	}
}

func subnetRows(leases []lease.Lease, now time.Time) []subnetRow {
	leases = slices.Clone(leases)
	slices.SortFunc(leases, func(a, b lease.Lease) int { return a.Subnet.Addr().Compare(b.Subnet.Addr()) })
	rows := make([]subnetRow, 0, len(leases))
	for _, l := range leases {
		r := subnetRow{Subnet: l.Subnet.String(), PublicIP: l.Attrs.PublicIP.String(), Node: l.Attrs.NodeName, Reservation: l.Reservation, TTLSeconds: -1}
		if l.IPv6Subnet.IsValid() {
			r.IPv6Subnet = l.IPv6Subnet.String()
		}
		if d := l.Attrs.BackendData; d != nil {
			r.VtepMAC = d.VtepMAC.String()
		}
		if !l.Reservation && !l.Expiration.IsZero() {
			r.TTLSeconds = int64(l.Expiration.Sub(now).Round(time.Second) / time.Second)
		}
		rows = append(rows, r)
	}
	return rows
}

func printSubnets(w io.Writer, rows []subnetRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBNET\tPUBLIC IP\tVTEP MAC\tNODE\tTTL\tRESERVATION")
	for _, r := range rows {
		ttl, res := "-", "no"
		if r.Reservation {
			res = "yes"
		} else if r.TTLSeconds >= 0 {
			ttl = (time.Duration(r.TTLSeconds) * time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Subnet, r.PublicIP, r.VtepMAC, r.Node, ttl, res)
	}
	return tw.Flush()
}
