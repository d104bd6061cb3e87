package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/test/lab"
)

// iperfPort is the iperf3 port inside the target namespace.
const iperfPort = 5201

// iperfSeconds is the length of each iperf3 run.
const iperfSeconds = 3

// iperf3Path finds iperf3; `make deps` installs it.
func iperf3Path() (string, error) {
	p, err := exec.LookPath("iperf3")
	if err != nil {
		return "", fmt.Errorf("iperf3 not installed (run `make deps` or apt-get install iperf3): %w", err)
	}
	return p, nil
}

// iperfServer is a one-off `iperf3 -s -1` in a namespace: it serves one test
// and exits.
type iperfServer struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan error
}

// startIperfServer starts the server and waits until it listens.
func startIperfServer(ctx context.Context, bin string, ns *lab.NetNS) (*iperfServer, error) {
	s := &iperfServer{done: make(chan error, 1)}
	s.cmd = exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name, bin, "-s", "-1", "-p", strconv.Itoa(iperfPort))
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	// Killed with us (and on ctx end by CommandContext); ip execs iperf3, so
	// the PID is the server's own.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start iperf3 server in %s: %w", ns.Name, err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	for deadline := time.Now().Add(5 * time.Second); ; {
		if listening(s.cmd.Process.Pid, iperfPort) {
			return s, nil
		}
		select {
		case err := <-s.done:
			s.done <- err
			return nil, fmt.Errorf("iperf3 server in %s exited: %v: %s", ns.Name, err, s.out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.stop()
			return nil, fmt.Errorf("iperf3 server in %s not listening after 5 s (%v)", ns.Name, ctx.Err())
		}
	}
}

// listening reports whether pid's namespace has a TCP socket listening on
// port (from /proc/PID/net/tcp and tcp6, which show the process's netns).
func listening(pid, port int) bool {
	want := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/net/" + f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) > 3 && strings.HasSuffix(fs[1], want) && fs[3] == "0A" { // 0A: TCP_LISTEN
				return true
			}
		}
	}
	return false
}

// stop kills the server (if still running) and reaps it.
func (s *iperfServer) stop() {
	_ = s.cmd.Process.Kill()
	err := <-s.done
	s.done <- err
}

// iperfResult is the part of `iperf3 -J` we read.
type iperfResult struct {
	End struct {
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// iperf runs one TCP test from src to dst (a server started in dst's
// namespace) and returns the receiver's throughput in bit/s.
func iperf(ctx context.Context, bin string, src, dstNS *lab.NetNS, dst netip.Addr, streams int) (float64, error) {
	srv, err := startIperfServer(ctx, bin, dstNS)
	if err != nil {
		return 0, err
	}
	defer srv.stop()
	cctx, cancel := context.WithTimeout(ctx, (iperfSeconds+20)*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, "ip", "netns", "exec", src.Name, bin, "-c", dst.String(), "-p", strconv.Itoa(iperfPort),
		"-t", strconv.Itoa(iperfSeconds), "-P", strconv.Itoa(streams), "-J")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, runErr := cmd.Output()
	var r iperfResult
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, errors.Join(fmt.Errorf("iperf3 %s → %s: parse JSON: %w", src.Name, dst, err), runErr)
	}
	if r.Error != "" {
		return 0, errors.Join(fmt.Errorf("iperf3 %s → %s: %s", src.Name, dst, r.Error), runErr)
	}
	if runErr != nil {
		return 0, fmt.Errorf("iperf3 %s → %s: %w", src.Name, dst, runErr)
	}
	if r.End.SumReceived.BitsPerSecond <= 0 {
		return 0, fmt.Errorf("iperf3 %s → %s: no throughput in the result", src.Name, dst)
	}
	return r.End.SumReceived.BitsPerSecond, nil
}
