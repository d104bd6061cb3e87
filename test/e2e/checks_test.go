package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// serverPort is where every pod's TCP server listens.
const serverPort = "8080"

// addPods attaches perNode pods (pod1, pod2...) to each node and starts
// their servers, which stop when the test ends.
func addPods(t *testing.T, l *lab.Lab, nodes []*lab.Node, perNode int) []*lab.Pod {
	t.Helper()
	var pods []*lab.Pod
	for _, n := range nodes {
		for i := 1; i <= perNode; i++ {
			p, err := l.AddPod(t.Context(), n, fmt.Sprintf("pod%d", i))
			if err != nil {
				t.Fatalf("add pod: %v", err)
			}
			serve(t, p)
			pods = append(pods, p)
		}
	}
	return pods
}

func podID(p *lab.Pod) string { return p.Node.Name + "/" + p.Name }

// serve runs the pod's TCP server: it answers "<node>/<pod> <client IP>".
func serve(t *testing.T, p *lab.Pod) {
	t.Helper()
	id := podID(p)
	_, wait, err := lab.ServeTCP(t.Context(), p.NS, ":"+serverPort, func(c net.Conn) {
		ra, _ := c.RemoteAddr().(*net.TCPAddr)
		_, _ = fmt.Fprintf(c, "%s %s\n", id, ra.IP)
	})
	if err != nil {
		t.Fatalf("serve in %s: %v", id, err)
	}
	t.Cleanup(wait) // t.Context() is cancelled before cleanups run
}

// ask connects from inside from to addr and returns the server's answer.
func ask(ctx context.Context, from *lab.NetNS, addr string) (id string, client netip.Addr, err error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := from.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", netip.Addr{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", netip.Addr{}, fmt.Errorf("read answer from %s: %w", addr, err)
	}
	idStr, ipStr, ok := strings.Cut(strings.TrimSpace(line), " ")
	if client, err = netip.ParseAddr(ipStr); !ok || err != nil {
		return "", netip.Addr{}, fmt.Errorf("answer from %s: bad line %q", addr, line)
	}
	return idStr, client, nil
}

// checkConnectivity is scenario 1: every pod pings every other pod, every
// node pings every pod, with no loss; a TCP flow between pods on different
// nodes shows the client's pod IP at the server (no NAT on the overlay).
func checkConnectivity(t *testing.T, l *lab.Lab, nodes []*lab.Node, pods []*lab.Pod) {
	t.Helper()
	ctx := t.Context()
	for _, from := range pods {
		for _, to := range pods {
			if from != to {
				pingOK(t, l, from.NS, podID(from), to)
			}
		}
	}
	for _, n := range nodes {
		for _, to := range pods {
			pingOK(t, l, n.NS, n.Name, to)
		}
	}
	for _, from := range pods {
		for _, to := range pods {
			if from.Node == to.Node {
				continue
			}
			id, client, err := ask(ctx, from.NS, net.JoinHostPort(to.IP.String(), serverPort))
			switch {
			case err != nil:
				t.Errorf("TCP %s → %s: %v", podID(from), podID(to), err)
			case id != podID(to):
				t.Errorf("TCP %s → %s (%s): answered by %s", podID(from), podID(to), to.IP, id)
			case client != from.IP:
				t.Errorf("TCP %s → %s: server saw client %s, want the pod IP %s (NAT on the overlay)", podID(from), podID(to), client, from.IP)
			}
		}
	}
}

// pingOK sends 3 echoes 20 ms apart and wants every reply.
func pingOK(t *testing.T, l *lab.Lab, from *lab.NetNS, fromName string, to *lab.Pod) {
	t.Helper()
	r, err := l.Ping(t.Context(), from, to.IP, 3, 20*time.Millisecond)
	if err != nil || r.Loss() > 0 {
		t.Errorf("ping %s → %s (%s): %v (err %v)", fromName, podID(to), to.IP, r, err)
	}
}

// agentsHealthy fails the test for every agent that exited or is not ready.
func agentsHealthy(t *testing.T, nodes []*lab.Node) {
	t.Helper()
	for _, n := range nodes {
		if done, err := n.AgentExited(); done {
			t.Errorf("%s: agent exited: %v\n%s", n.Name, err, n.LogTail(20))
		} else if !n.Ready(t.Context()) {
			t.Errorf("%s: agent not ready\n%s", n.Name, n.LogTail(20))
		}
	}
}

// eventually polls check every 20 ms until it returns nil or limit passes
// (measured from start), and returns the last error.
func eventually(start time.Time, limit time.Duration, check func() error) error {
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Since(start) > limit {
			return fmt.Errorf("after %s: %w", limit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
