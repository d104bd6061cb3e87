// Package e2e runs weft end to end: the built weftd and weft binaries in
// network namespaces built by package lab, against a real etcd, with pods
// attached through libcni and manifests/10-weft.conflist. The tests are
// black-box (exec and sockets only) and need root; they skip otherwise and
// with -short. See e2e_test.go for the topology and the scenarios.
//
// Families (issue 14): TestFamilyMatrix runs an IPv4, a dual-stack and an
// IPv6-only pod network, each over an underlay of the same family. flannel's
// vxlan backend, whose wire format weft keeps, has no IPv4 overlay over an
// IPv6 underlay: flannel.1 (IPv4) is always a VXLAN device over the node's
// IPv4 public address and flannel-v6.1 (IPv6) over its IPv6 one, and a lease
// names the peer by PublicIP for the first and PublicIPv6 for the second. So
// an IPv4 or dual-stack network needs an underlay with IPv4 addresses (dual
// stack needs both families), and an IPv6-only network needs only IPv6 on the
// underlay; the matrix tests these and no cross-family combination, except
// TestDualStackNeedsIPv6Underlay, which checks that weftd refuses a dual-stack
// network on an IPv4-only underlay before it changes anything.
//
// TestFlannelDualStackPeer stands in for a dual-stack flannel node: no
// flannel binary is available offline, so the test writes the lease flanneld
// would write and programs by hand (ip and bridge commands) the devices and
// entries flanneld's vxlan backend would create.
package e2e
