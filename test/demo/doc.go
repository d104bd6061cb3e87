// Command demo brings up a small weft cluster in network namespaces (see
// package lab), dual stack by default (-family ipv4, dual or ipv6), shows
// its nodes, pods, a pod-to-pod ping matrix per address family and the
// leases in etcd, then removes everything. `make demo` runs it as root after
// `make build`:
//
//	go run ./test/demo -bin-dir bin
//
// DEMO_KEEP=1 leaves the cluster running and prints how to enter the
// namespaces and how to clean up. The exit status is non-zero if any ping
// failed or anything could not be set up.
package main
