// Command weft-etcd runs a single-member etcd server for one-node setups, the
// demo and the lab. `weftd run` without --etcd-endpoints starts it as a child
// process (it looks next to its own executable, then in PATH). Once the
// server answers, weft-etcd prints its client endpoints, comma-separated, as
// one line on stdout; logs go to stderr. SIGTERM or SIGINT stops it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/weftnet/weft/lease/etcdstore/etcdserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("weft-etcd", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "/var/lib/weft/etcd", "data directory")
	clientURL := fs.String("client-url", "http://127.0.0.1:2379", "client URL to listen on")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var log *slog.Logger
	switch *logFormat {
	case "text":
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	case "json":
		log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	default:
		fmt.Fprintf(os.Stderr, "weft-etcd: --log-format %q: want text or json\n", *logFormat)
		return 2
	}
	srv, err := etcdserver.Start(ctx, etcdserver.Config{Dir: *dataDir, ClientURLs: []string{*clientURL}, Logger: log})
	if err != nil {
		log.Error("etcd did not start", "err", err)
		return 1
	}
	if _, err := fmt.Println(strings.Join(srv.Endpoints(), ",")); err != nil {
		log.Error("report endpoints on stdout", "err", err)
	}
	<-ctx.Done()
	log.Info("stopping etcd")
	if err := srv.Close(); err != nil {
		log.Error("stop etcd", "err", err)
		return 1
	}
	return 0
}
