// Command testpod is the kube tier's test pod: a server the other pods and
// nodes reach, and the clients the tier runs in pods with `kubectl exec`
// (the image has no other tools that work: busybox's wget segfaults in a
// minimal image). Static, no cgo.
//
//	testpod serve [-addr :8080]              HTTP: "/" answers "<pod> <client IP>",
//	                                         "/bytes?n=N" streams N pattern bytes
//	testpod get [-n N] [-timeout D] URL      N requests, one connection each, one line per answer
//	testpod fetch -bytes N URL               GET URL/bytes?n=N and check length and pattern
//	testpod ping [-c N] [-s SIZE] [-i D] [-W D] IP
//	                                         ICMP (ICMPv6 to an IPv6 address) echo with DF
//	                                         set (no fragmentation); prints
//	                                         "sent N received M"; "message too long" when SIZE
//	                                         does not fit the route's MTU
//	testpod dns [-tcp] [-n N] NAME           A query for NAME (plus the first search domain of
//	                                         /etc/resolv.conf when NAME has no dot) to the first
//	                                         nameserver of /etc/resolv.conf, N times, one socket
//	                                         each, asking for the server's NSID; one line each:
//	                                         "server=<ip> nsid=<id> rcode=<c> a=<ip,...>"
//	testpod wait                             block until SIGTERM
//
// Exit status 0 only if every request, echo or query succeeded.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testpod serve|get|fetch|ping|dns|wait [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var err error
	switch args := os.Args[2:]; os.Args[1] {
	case "serve":
		err = serve(ctx, args)
	case "get":
		err = get(ctx, args)
	case "fetch":
		err = fetch(ctx, args)
	case "ping":
		err = ping(ctx, args)
	case "dns":
		err = dns(ctx, args)
	case "wait":
		<-ctx.Done()
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testpod:", err)
		os.Exit(1)
	}
}
