package etcdtest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections to an etcd endpoint. Pause cuts every
// connection and refuses new ones until Resume: to the client behind it,
// etcd is down. Closed in t.Cleanup.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	paused bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// NewProxy listens on a free 127.0.0.1 port and forwards to target
// ("127.0.0.1:2379"; a URL's scheme is stripped).
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	if h, ok := cutScheme(target); ok {
		target = h
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.close)
	return p
}

func cutScheme(s string) (string, bool) {
	for _, pre := range []string{"http://", "https://"} {
		if len(s) > len(pre) && s[:len(pre)] == pre {
			return s[len(pre):], true
		}
	}
	return s, false
}

// Endpoint is the proxy's client URL (http).
func (p *Proxy) Endpoint() string { return "http://" + p.ln.Addr().String() }

// Pause closes all connections and refuses new ones.
func (p *Proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	for c := range p.conns {
		_ = c.Close()
	}
}

// Resume accepts connections again.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = false
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // listener closed
		}
		p.mu.Lock()
		paused := p.paused
		p.mu.Unlock()
		if paused {
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.track(c, up)
	}
}

func (p *Proxy) track(c, up net.Conn) {
	p.mu.Lock()
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	pipe := func(dst, src net.Conn) {
		defer p.wg.Done()
		_, _ = io.Copy(dst, src)
		_ = dst.Close()
		_ = src.Close()
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		p.mu.Unlock()
	}
	p.wg.Add(2)
	go pipe(up, c)
	go pipe(c, up)
}

func (p *Proxy) close() {
	_ = p.ln.Close()
	p.Pause()
	p.wg.Wait()
}
