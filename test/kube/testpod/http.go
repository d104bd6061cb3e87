package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// maxBytes bounds /bytes?n= (the tier asks for 10 MB).
const maxBytes = 1 << 30

// pattern is the byte at offset i of every /bytes answer: a receiver that
// gets a corrupted or shifted segment notices.
func pattern(i int64) byte { return byte(i % 251) }

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("addr", ":8080", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		ip, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			ip = r.RemoteAddr
		}
		fmt.Fprintf(w, "%s %s\n", host, ip)
	})
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 || n > maxBytes {
			http.Error(w, "want n=0.."+strconv.Itoa(maxBytes), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		bw := bufio.NewWriterSize(w, 64<<10)
		for i := range n {
			if err := bw.WriteByte(pattern(i)); err != nil {
				return
			}
		}
		_ = bw.Flush()
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", *addr, err)
	case <-ctx.Done():
		// SIGTERM: exit at once, so that deleting pods is quick.
		_ = srv.Close()
		return nil
	}
}

// client makes one connection per request (no keep-alive): each request is
// a new flow, so a Service picks a backend for each.
func client(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	}
}

func get(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	n := fs.Int("n", 1, "requests")
	timeout := fs.Duration("timeout", 5*time.Second, "timeout of each request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("get: want one URL")
	}
	url := fs.Arg(0)
	c := client(*timeout)
	var errs []error
	for i := range *n {
		body, err := getOnce(ctx, c, url)
		if err != nil {
			fmt.Printf("error %v\n", err)
			errs = append(errs, fmt.Errorf("request %d: %w", i+1, err))
			continue
		}
		fmt.Println(strings.TrimSpace(body))
	}
	return errors.Join(errs...)
}

func getOnce(ctx context.Context, c *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

func fetch(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("fetch", flag.ContinueOnError)
	n := fs.Int64("bytes", 10<<20, "bytes to fetch")
	timeout := fs.Duration("timeout", 60*time.Second, "timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("fetch: want one URL")
	}
	url := strings.TrimSuffix(fs.Arg(0), "/") + "/bytes?n=" + strconv.FormatInt(*n, 10)
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client(*timeout).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	var got int64
	for {
		b, err := br.ReadByte()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("GET %s: after %d bytes: %w", url, got, err)
		}
		if b != pattern(got) {
			return fmt.Errorf("GET %s: byte %d is %d, want %d", url, got, b, pattern(got))
		}
		got++
	}
	if got != *n {
		return fmt.Errorf("GET %s: %d bytes, want %d", url, got, *n)
	}
	fmt.Printf("ok %d bytes in %s\n", got, time.Since(start).Round(time.Millisecond))
	return nil
}
