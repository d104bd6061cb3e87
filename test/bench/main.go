// Command bench measures weft's speed, scale and footprint and prints one
// table (and JSON with -json FILE). Run it as root through `make bench`.
//
// Each figure lives in its own file and registers a func in figures; a figure
// that cannot run here (missing tool, not root) reports why instead of a number.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// Row is one measured figure.
type Row struct {
	Figure string  `json:"figure"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Target string  `json:"target,omitempty"`
	Met    *bool   `json:"met,omitempty"`
	How    string  `json:"how"`
	Note   string  `json:"note,omitempty"`
}

// Env is what every figure gets.
type Env struct {
	BinDir string // built weftd, weft-etcd and weft
}

type figure struct {
	name string
	run  func(ctx context.Context, env Env) ([]Row, error)
}

// figures are run in the order of the table.
var figures = []figure{
	{"cni", benchCNI},
	{"lease-acquire", benchAcquire},
	{"join", benchJoin},
	{"peer-programming", benchPeers},
	{"miss-answer", benchMiss},
	{"scale", benchScale},
	{"idle", benchIdle},
	{"etcd-outage", benchOutage},
	{"data-plane", benchDataPlane},
}

func met(ok bool) *bool { return &ok }

func main() {
	os.Exit(run())
}

func run() int {
	jsonOut := flag.String("json", "", "also write the rows as JSON to this file")
	binDir := flag.String("bin-dir", "bin", "directory with the built weftd, weft-etcd and weft")
	only := flag.String("only", "", "comma-separated figure names to run (default all)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	env := Env{BinDir: *binDir}
	var rows []Row
	failed := false
	for _, f := range figures {
		if *only != "" && !strings.Contains(","+*only+",", ","+f.name+",") {
			continue
		}
		start := time.Now()
		r, err := f.run(ctx, env)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", f.name, err)
			rows = append(rows, Row{Figure: f.name, Unit: "-", How: "failed", Note: err.Error()})
			failed = true
			continue
		}
		fmt.Fprintf(os.Stderr, "bench %s: done in %s\n", f.name, time.Since(start).Round(time.Millisecond))
		rows = append(rows, r...)
	}
	printTable(rows)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(map[string]any{"machine": machine(), "rows": rows}, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "write %s: %v\n", *jsonOut, err)
			return 1
		}
	}
	if failed {
		return 1
	}
	return 0
}

func machine() string {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%d CPUs, %s, kernel %s, %s", runtime.NumCPU(), memTotal(), strings.TrimSpace(string(kernel)), runtime.Version())
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "memory unknown"
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.Join(strings.Fields(line)[1:], " ") + " RAM"
}

func printTable(rows []Row) {
	fmt.Printf("machine: %s\n\n", machine())
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "FIGURE\tVALUE\tUNIT\tTARGET\tMET\tHOW")
	for _, r := range rows {
		m := ""
		if r.Met != nil {
			m = map[bool]string{true: "yes", false: "NO"}[*r.Met]
		}
		v := fmt.Sprintf("%.3f", r.Value)
		if r.How == "failed" {
			v = "-"
		}
		how := r.How
		if r.Note != "" {
			how += " (" + r.Note + ")"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Figure, v, r.Unit, r.Target, m, how)
	}
	_ = w.Flush()
}
