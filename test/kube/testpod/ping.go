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
	"golang.org/x/net/ipv6"
)

func ping(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ping", flag.ContinueOnError)
	count := fs.Int("c", 3, "echo requests")
	size := fs.Int("s", 56, "ICMP payload bytes (the IP packet is 28 bytes more, 48 over IPv6)")
	interval := fs.Duration("i", 200*time.Millisecond, "interval between requests")
	wait := fs.Duration("W", 2*time.Second, "wait for replies after the last request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("ping: want one IP address")
	}
	to, err := netip.ParseAddr(fs.Arg(0))
	if err != nil || to.Zone() != "" {
		return fmt.Errorf("ping: %q is not an IP address", fs.Arg(0))
	}
	to = to.Unmap()
	if *count < 1 || *size < 0 || *size > 65507 {
		return fmt.Errorf("ping: -c %d -s %d out of range", *count, *size)
	}
	network, laddr := "ip4:icmp", "0.0.0.0"
	if to.Is6() {
		network, laddr = "ip6:ipv6-icmp", "::"
	}
	conn, err := net.ListenPacket(network, laddr)
	if err != nil {
		return fmt.Errorf("ping: raw ICMP socket: %w", err)
	}
	defer conn.Close()
	if err := setDontFragment(conn.(*net.IPConn), to.Is6()); err != nil {
		return err
	}
	var idb [2]byte
	_, _ = rand.Read(idb[:])
	r := &replies{conn: conn, from: to, id: int(binary.BigEndian.Uint16(idb[:])), size: *size, seqs: map[int]bool{}, done: make(chan struct{})}
	go r.receive()

	sent, sendErr := r.send(ctx, *count, *interval)
	deadline := time.Now().Add(*wait)
	for r.count() < sent && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	_ = conn.Close()
	<-r.done
	got := r.count()
	fmt.Printf("sent %d received %d size %d\n", sent, got, *size)
	if sendErr != nil {
		return sendErr
	}
	if got != sent {
		return fmt.Errorf("%d of %d echo requests to %s got no reply", sent-got, sent, to)
	}
	return nil
}

// replies sends echo requests and records the replies (by sequence number)
// that come back from the address pinged, with our ID and payload size.
type replies struct {
	conn net.PacketConn
	from netip.Addr
	id   int
	size int
	done chan struct{} // closed when receive returns (the socket was closed)

	mu   sync.Mutex
	seqs map[int]bool
}

// send sends count requests, interval apart, and returns how many went out;
// a request that does not fit the route's MTU ends it ("message too long").
func (r *replies) send(ctx context.Context, count int, interval time.Duration) (int, error) {
	data := make([]byte, r.size)
	for i := range data {
		data[i] = byte(i)
	}
	var echo icmp.Type = ipv4.ICMPTypeEcho
	if r.from.Is6() {
		// The kernel fills in the ICMPv6 checksum of a raw ICMPv6 socket.
		echo = ipv6.ICMPTypeEchoRequest
	}
	sent := 0
	for seq := 1; seq <= count; seq++ {
		msg := icmp.Message{Type: echo, Body: &icmp.Echo{ID: r.id, Seq: seq, Data: data}}
		b, _ := msg.Marshal(nil)
		if _, err := r.conn.WriteTo(b, &net.IPAddr{IP: r.from.AsSlice()}); err != nil {
			if errors.Is(err, syscall.EMSGSIZE) {
				return sent, fmt.Errorf("send %d-byte echo to %s: message too long", r.size, r.from)
			}
			return sent, fmt.Errorf("send echo %d to %s: %w", seq, r.from, err)
		}
		sent++
		if seq == count {
			break
		}
		select {
		case <-ctx.Done():
			return sent, nil
		case <-time.After(interval):
		}
	}
	return sent, nil
}

func (r *replies) receive() {
	defer close(r.done)
	proto, reply := 1, icmp.Type(ipv4.ICMPTypeEchoReply) // IPPROTO_ICMP
	if r.from.Is6() {
		proto, reply = 58, ipv6.ICMPTypeEchoReply // IPPROTO_ICMPV6
	}
	buf := make([]byte, 65536)
	for {
		n, src, err := r.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if a, ok := src.(*net.IPAddr); !ok || !a.IP.Equal(r.from.AsSlice()) {
			continue
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || m.Type != reply {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == r.id && len(e.Data) == r.size {
			r.mu.Lock()
			r.seqs[e.Seq] = true
			r.mu.Unlock()
		}
	}
}

func (r *replies) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seqs)
}

// setDontFragment sets IP_MTU_DISCOVER=IP_PMTUDISC_DO (IPv6:
// IPV6_MTU_DISCOVER=IPV6_PMTUDISC_DO): the kernel sets DF (IPv6: does not
// fragment at the source) and refuses (EMSGSIZE) a packet larger than the
// route's MTU, so a ping of the largest size proves the path MTU.
func setDontFragment(c *net.IPConn, v6 bool) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("ping: raw conn: %w", err)
	}
	level, opt, val, name := syscall.IPPROTO_IP, syscall.IP_MTU_DISCOVER, syscall.IP_PMTUDISC_DO, "IP_PMTUDISC_DO"
	if v6 {
		level, opt, val, name = syscall.IPPROTO_IPV6, syscall.IPV6_MTU_DISCOVER, syscall.IPV6_PMTUDISC_DO, "IPV6_PMTUDISC_DO"
	}
	var serr error
	err = rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), level, opt, val) })
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("ping: set %s: %w", name, err)
	}
	return nil
}
