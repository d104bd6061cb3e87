package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// optNSID is the EDNS0 option code of the name server identifier (RFC 5001):
// CoreDNS's nsid plugin answers it with the pod's hostname, which tells the
// tier which CoreDNS pod behind the kube-dns Service answered.
const optNSID = 3

type resolvConf struct {
	nameservers []string
	search      []string
}

func readResolvConf(path string) (resolvConf, error) {
	f, err := os.Open(path)
	if err != nil {
		return resolvConf{}, err
	}
	defer f.Close()
	var rc resolvConf
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "nameserver":
			rc.nameservers = append(rc.nameservers, fields[1])
		case "search":
			rc.search = fields[1:]
		}
	}
	if err := sc.Err(); err != nil {
		return resolvConf{}, fmt.Errorf("read %s: %w", path, err)
	}
	if len(rc.nameservers) == 0 {
		return resolvConf{}, fmt.Errorf("%s: no nameserver", path)
	}
	return rc, nil
}

func dns(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dns", flag.ContinueOnError)
	useTCP := fs.Bool("tcp", false, "query over TCP (default UDP)")
	n := fs.Int("n", 1, "queries, one socket each")
	timeout := fs.Duration("timeout", 3*time.Second, "timeout of each query")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("dns: want one name")
	}
	rc, err := readResolvConf("/etc/resolv.conf")
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	name := fs.Arg(0)
	if !strings.Contains(strings.TrimSuffix(name, "."), ".") && len(rc.search) > 0 {
		name += "." + rc.search[0]
	}
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	server := rc.nameservers[0]
	network := "udp"
	if *useTCP {
		network = "tcp"
	}
	var errs []error
	for i := range *n {
		qctx, cancel := context.WithTimeout(ctx, *timeout)
		line, err := query(qctx, network, server, name)
		cancel()
		if err != nil {
			fmt.Printf("server=%s error=%q\n", server, err.Error())
			errs = append(errs, fmt.Errorf("query %d for %s over %s to %s: %w", i+1, name, network, server, err))
			continue
		}
		fmt.Println(line)
	}
	return errors.Join(errs...)
}

// query asks server for name's A records with an NSID request and returns
// "server=<ip> nsid=<id> rcode=<code> a=<ip,...>".
func query(ctx context.Context, network, server, name string) (string, error) {
	qname, err := dnsmessage.NewName(name)
	if err != nil {
		return "", err
	}
	id := uint16(rand.Uint32())
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return "", err
	}
	if err := b.Question(dnsmessage.Question{Name: qname, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}); err != nil {
		return "", err
	}
	if err := b.StartAdditionals(); err != nil {
		return "", err
	}
	var opt dnsmessage.ResourceHeader
	if err := opt.SetEDNS0(1232, dnsmessage.RCodeSuccess, false); err != nil {
		return "", err
	}
	if err := b.OPTResource(opt, dnsmessage.OPTResource{Options: []dnsmessage.Option{{Code: optNSID}}}); err != nil {
		return "", err
	}
	msg, err := b.Finish()
	if err != nil {
		return "", err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, net.JoinHostPort(server, "53"))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	resp, err := exchange(conn, network == "tcp", msg)
	if err != nil {
		return "", err
	}
	return describe(resp, id, server)
}

// exchange sends msg and reads the answer; TCP messages carry a two-byte
// length prefix (RFC 1035 4.2.2).
func exchange(conn net.Conn, tcp bool, msg []byte) ([]byte, error) {
	if tcp {
		framed := binary.BigEndian.AppendUint16(nil, uint16(len(msg)))
		if _, err := conn.Write(append(framed, msg...)); err != nil {
			return nil, fmt.Errorf("write: %w", err)
		}
		var l [2]byte
		if _, err := io.ReadFull(conn, l[:]); err != nil {
			return nil, fmt.Errorf("read length: %w", err)
		}
		resp := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(conn, resp); err != nil {
			return nil, fmt.Errorf("read answer: %w", err)
		}
		return resp, nil
	}
	if _, err := conn.Write(msg); err != nil {
		return nil, fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, 65535)
	n, err := conn.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	return buf[:n], nil
}

func describe(resp []byte, id uint16, server string) (string, error) {
	var p dnsmessage.Parser
	h, err := p.Start(resp)
	if err != nil {
		return "", fmt.Errorf("parse answer: %w", err)
	}
	if h.ID != id || !h.Response {
		return "", fmt.Errorf("answer id %d response %v, want id %d", h.ID, h.Response, id)
	}
	if err := p.SkipAllQuestions(); err != nil {
		return "", fmt.Errorf("parse questions: %w", err)
	}
	as, err := aRecords(&p)
	if err != nil {
		return "", err
	}
	if err := p.SkipAllAuthorities(); err != nil {
		return "", fmt.Errorf("parse authorities: %w", err)
	}
	nsid, err := nsidOption(&p)
	if err != nil {
		return "", err
	}
	if len(as) == 0 {
		as = []string{"-"}
	}
	return fmt.Sprintf("server=%s nsid=%s rcode=%s a=%s", server, nsid, rcodeName(h.RCode), strings.Join(as, ",")), nil
}

// aRecords reads the answer section's A records.
func aRecords(p *dnsmessage.Parser) ([]string, error) {
	var as []string
	for {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			return as, nil
		}
		if err != nil {
			return nil, fmt.Errorf("parse answers: %w", err)
		}
		if rh.Type != dnsmessage.TypeA {
			if err := p.SkipAnswer(); err != nil {
				return nil, fmt.Errorf("parse answers: %w", err)
			}
			continue
		}
		a, err := p.AResource()
		if err != nil {
			return nil, fmt.Errorf("parse A: %w", err)
		}
		as = append(as, net.IP(a.A[:]).String())
	}
}

// nsidOption reads the NSID from the additional section's OPT record ("-"
// when there is none).
func nsidOption(p *dnsmessage.Parser) (string, error) {
	nsid := "-"
	for {
		rh, err := p.AdditionalHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			return nsid, nil
		}
		if err != nil {
			return "", fmt.Errorf("parse additionals: %w", err)
		}
		if rh.Type != dnsmessage.TypeOPT {
			if err := p.SkipAdditional(); err != nil {
				return "", fmt.Errorf("parse additionals: %w", err)
			}
			continue
		}
		opt, err := p.OPTResource()
		if err != nil {
			return "", fmt.Errorf("parse OPT: %w", err)
		}
		for _, o := range opt.Options {
			if o.Code == optNSID && len(o.Data) > 0 {
				nsid = string(o.Data)
			}
		}
	}
}

func rcodeName(c dnsmessage.RCode) string {
	switch c {
	case dnsmessage.RCodeSuccess:
		return "NOERROR"
	case dnsmessage.RCodeNameError:
		return "NXDOMAIN"
	case dnsmessage.RCodeServerFailure:
		return "SERVFAIL"
	case dnsmessage.RCodeRefused:
		return "REFUSED"
	}
	return fmt.Sprintf("%d", c)
}
