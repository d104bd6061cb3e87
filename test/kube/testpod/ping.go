package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

func ping(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ping", flag.ContinueOnError)
	count := fs.Int("c", 3, "echo requests")
	size := fs.Int("s", 56, "ICMP payload bytes (the IP packet is 28 bytes more)")
	interval := fs.Duration("i", 200*time.Millisecond, "interval between requests")
	wait := fs.Duration("W", 2*time.Second, "wait for replies after the last request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("ping: want one IPv4 address")
	}
	to, err := netip.ParseAddr(fs.Arg(0))
	if err != nil || !to.Is4() {
		return fmt.Errorf("ping: %q is not an IPv4 address", fs.Arg(0))
	}
	if *count < 1 || *size < 0 || *size > 65507 {
		return fmt.Errorf("ping: -c %d -s %d out of range", *count, *size)
	}
	conn, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return fmt.Errorf("ping: raw ICMP socket: %w", err)
	}
	defer conn.Close()
	if err := setDontFragment(conn.(*net.IPConn)); err != nil {
		return err
	}
	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := int(binary.BigEndian.Uint16(idb[:]))

	var mu sync.Mutex
	replied := map[int]bool{}
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		buf := make([]byte, 65536)
		for {
			n, src, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if a, ok := src.(*net.IPAddr); !ok || !a.IP.Equal(to.AsSlice()) {
				continue
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && len(e.Data) == *size {
				mu.Lock()
				replied[e.Seq] = true
				mu.Unlock()
			}
		}
	}()

	sent := 0
	var sendErr error
	for seq := 1; seq <= *count; seq++ {
		data := make([]byte, *size)
		for i := range data {
			data[i] = byte(i)
		}
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: data}}
		b, _ := msg.Marshal(nil)
		if _, err := conn.WriteTo(b, &net.IPAddr{IP: to.AsSlice()}); err != nil {
			if errors.Is(err, syscall.EMSGSIZE) {
				sendErr = fmt.Errorf("send %d-byte echo to %s: message too long", *size, to)
			} else {
				sendErr = fmt.Errorf("send echo %d to %s: %w", seq, to, err)
			}
			break
		}
		sent++
		if seq < *count {
			select {
			case <-ctx.Done():
				seq = *count
			case <-time.After(*interval):
			}
		}
	}
	deadline := time.Now().Add(*wait)
	for time.Now().Before(deadline) {
		mu.Lock()
		all := len(replied) == sent
		mu.Unlock()
		if all {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = conn.Close()
	<-recvDone
	fmt.Printf("sent %d received %d size %d\n", sent, len(replied), *size)
	if sendErr != nil {
		return sendErr
	}
	if len(replied) != sent {
		return fmt.Errorf("%d of %d echo requests to %s got no reply", sent-len(replied), sent, to)
	}
	return nil
}

// setDontFragment sets IP_MTU_DISCOVER=IP_PMTUDISC_DO: the kernel sets DF and
// refuses (EMSGSIZE) a packet larger than the route's MTU instead of
// fragmenting it, so a ping of the largest size proves the path MTU.
func setDontFragment(c *net.IPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("ping: raw conn: %w", err)
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_MTU_DISCOVER, syscall.IP_PMTUDISC_DO)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("ping: set IP_PMTUDISC_DO: %w", err)
	}
	return nil
}
