package lab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// replyGrace is how long a pinger waits for replies after its last request:
// an on-demand miss answer or an ARP resolution may hold a packet ~1 s.
const replyGrace = 2 * time.Second

// PingResult counts echo requests and replies.
type PingResult struct {
	Sent, Received int
	RTTs           []time.Duration // of the received replies, in sequence order
	Lost           []int           // sequence numbers (from 1) that got no reply
}

// Loss is the number of requests without a reply.
func (r PingResult) Loss() int { return r.Sent - r.Received }

// AvgRTT is the mean round-trip time (0 without replies).
func (r PingResult) AvgRTT() time.Duration {
	if len(r.RTTs) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range r.RTTs {
		sum += d
	}
	return sum / time.Duration(len(r.RTTs))
}

func (r PingResult) String() string {
	return fmt.Sprintf("%d sent, %d received, lost seqs %v, avg rtt %s", r.Sent, r.Received, r.Lost, r.AvgRTT())
}

// Pinger sends ICMP echo requests from a raw socket opened in a namespace.
type Pinger struct {
	conn     net.PacketConn
	to       netip.Addr
	id       uint16
	stop     chan struct{}
	sendDone chan struct{}
	recvDone chan struct{}
	stopOnce sync.Once

	mu         sync.Mutex
	sentAt     []time.Time // index seq-1
	rtt        map[int]time.Duration
	firstReply time.Time
	sendErr    error
}

// Ping sends count requests from inside from to to, one per interval, and
// waits up to 2 s after the last one for the replies.
func (l *Lab) Ping(ctx context.Context, from *NetNS, to netip.Addr, count int, interval time.Duration) (PingResult, error) {
	if count <= 0 {
		return PingResult{}, fmt.Errorf("ping count %d: want > 0", count)
	}
	p, err := StartPing(ctx, from, to, count, interval)
	if err != nil {
		return PingResult{}, err
	}
	select {
	case <-p.sendDone:
	case <-ctx.Done():
	}
	return p.Stop()
}

// StartPing starts pinging to (IPv4: ICMP, IPv6: ICMPv6) from inside from,
// one request per interval, until count requests are sent (count 0: until
// Stop) or ctx ends.
func StartPing(ctx context.Context, from *NetNS, to netip.Addr, count int, interval time.Duration) (*Pinger, error) {
	if !to.IsValid() {
		return nil, errors.New("ping: no address")
	}
	to = to.Unmap()
	network, laddr := "ip4:icmp", "0.0.0.0"
	if to.Is6() {
		// The kernel fills in the ICMPv6 checksum on raw ICMPv6 sockets.
		network, laddr = "ip6:ipv6-icmp", "::"
	}
	conn, err := from.ListenPacket(network, laddr)
	if err != nil {
		return nil, err
	}
	var id [2]byte
	_, _ = rand.Read(id[:])
	p := &Pinger{conn: conn, to: to, id: binary.BigEndian.Uint16(id[:]),
		stop: make(chan struct{}), sendDone: make(chan struct{}), recvDone: make(chan struct{}),
		rtt: map[int]time.Duration{}}
	// The socket is closed by Stop or when ctx ends; both goroutines end then.
	stopAfter := context.AfterFunc(ctx, func() {
		p.halt()
		_ = p.conn.Close()
	})
	go func() {
		defer stopAfter()
		p.receive()
	}()
	go p.send(count, interval)
	return p, nil
}

func (p *Pinger) halt() { p.stopOnce.Do(func() { close(p.stop) }) }

func (p *Pinger) send(count int, interval time.Duration) {
	defer close(p.sendDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for seq := 1; count == 0 || seq <= count; seq++ {
		if seq > 0xffff {
			return
		}
		var typ icmp.Type = ipv4.ICMPTypeEcho
		if p.to.Is6() {
			typ = ipv6.ICMPTypeEchoRequest
		}
		msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: int(p.id), Seq: seq, Data: make([]byte, 56)}}
		b, _ := msg.Marshal(nil)
		p.mu.Lock()
		p.sentAt = append(p.sentAt, time.Now())
		p.mu.Unlock()
		if _, err := p.conn.WriteTo(b, &net.IPAddr{IP: p.to.AsSlice()}); err != nil {
			p.mu.Lock()
			p.sendErr = fmt.Errorf("send echo %d to %s: %w", seq, p.to, err)
			p.mu.Unlock()
			return
		}
		if count != 0 && seq == count {
			return
		}
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

func (p *Pinger) receive() {
	defer close(p.recvDone)
	proto, reply := 1, icmp.Type(ipv4.ICMPTypeEchoReply)
	if p.to.Is6() {
		proto, reply = 58, ipv6.ICMPTypeEchoReply
	}
	buf := make([]byte, 1500)
	for {
		n, src, err := p.conn.ReadFrom(buf)
		if err != nil {
			return // closed by Stop
		}
		now := time.Now()
		ip, ok := src.(*net.IPAddr)
		if !ok || !ip.IP.Equal(p.to.AsSlice()) {
			continue
		}
		msg, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || msg.Type != reply {
			continue
		}
		echo, ok := msg.Body.(*icmp.Echo)
		if !ok || echo.ID != int(p.id) {
			continue
		}
		p.mu.Lock()
		if echo.Seq >= 1 && echo.Seq <= len(p.sentAt) {
			if _, dup := p.rtt[echo.Seq]; !dup {
				p.rtt[echo.Seq] = now.Sub(p.sentAt[echo.Seq-1])
			}
			if p.firstReply.IsZero() {
				p.firstReply = now
			}
		}
		p.mu.Unlock()
	}
}

// Sent is the number of requests sent so far.
func (p *Pinger) Sent() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sentAt)
}

// FirstReplyAt is when the first reply arrived (zero before that).
func (p *Pinger) FirstReplyAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.firstReply
}

func (p *Pinger) allReplied() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.rtt) == len(p.sentAt)
}

// Stop ends sending, waits up to 2 s for outstanding replies and returns the
// counts. A send error (e.g. no route) is returned along with the counts.
func (p *Pinger) Stop() (PingResult, error) {
	p.halt()
	<-p.sendDone
	deadline := time.Now().Add(replyGrace)
	for !p.allReplied() && time.Now().Before(deadline) {
		select {
		case <-p.recvDone: // ctx ended: no more replies can come
			deadline = time.Now()
		case <-time.After(5 * time.Millisecond):
		}
	}
	closeErr := p.conn.Close()
	<-p.recvDone
	p.mu.Lock()
	defer p.mu.Unlock()
	r := PingResult{Sent: len(p.sentAt), Received: len(p.rtt)}
	for seq := 1; seq <= r.Sent; seq++ {
		if d, ok := p.rtt[seq]; ok {
			r.RTTs = append(r.RTTs, d)
		} else {
			r.Lost = append(r.Lost, seq)
		}
	}
	if closeErr != nil && !errors.Is(closeErr, net.ErrClosed) {
		return r, errors.Join(p.sendErr, fmt.Errorf("close icmp socket: %w", closeErr))
	}
	return r, p.sendErr
}
