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
	sent := 0
	for seq := 1; seq <= count; seq++ {
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: r.id, Seq: seq, Data: data}}
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
	buf := make([]byte, 65536)
	for {
		n, src, err := r.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if a, ok := src.(*net.IPAddr); !ok || !a.IP.Equal(r.from.AsSlice()) {
			continue
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
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
