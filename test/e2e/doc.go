// Package e2e runs weft end to end: the built weftd and weft binaries in
// network namespaces built by package lab, against a real etcd, with pods
// attached through libcni and manifests/10-weft.conflist. The tests are
// black-box (exec and sockets only) and need root; they skip otherwise and
// with -short. See e2e_test.go for the topology and the scenarios.
package e2e
