package lab

import (
	"context"
	"net"
	"sync"
	"time"
)

// connDeadline bounds each connection ServeTCP hands to its handler.
const connDeadline = 5 * time.Second

// ServeTCP listens on addr inside n (the socket stays in n) and runs handle
// for each connection, which it closes afterwards. An addr without a host
// (":8080") listens on both families. It serves until ctx ends;
// the returned wait blocks until the accept loop and every handler are done.
func ServeTCP(ctx context.Context, n *NetNS, addr string, handle func(net.Conn)) (net.Addr, func(), error) {
	ln, err := n.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer stop()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed when ctx ended
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(connDeadline))
				handle(c)
			}()
		}
	}()
	return ln.Addr(), wg.Wait, nil
}
