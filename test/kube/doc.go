// Package kube is the kube test tier: weft in a real, dual-stack Kubernetes
// cluster (package cluster: control plane and two nodes with containerd,
// kubelet and kube-proxy, each node a network and a mount namespace of its
// own, with an IPv4 and an IPv6 underlay address), installed from
// manifests/weft.yaml with `kubectl apply -k` of a kustomization that sets
// only the image and the etcd Secret (and deletes the TLS file variables:
// this etcd is plain http), as the README tells a user, plus a patch of
// net-conf.json that turns on IPv6 (EnableIPv6, IPv6Network fc00::/48).
// TestKube asserts ten numbered checks as subtests on one cluster:
//
//	1  both nodes turn Ready only after weftd wrote subnet.env (before the
//	   network config exists weftd runs and the runtime reports the network
//	   not ready)
//	10 dual stack: subnet.env has both families' networks and subnets,
//	   flannel.1 (MTU 1450) and flannel-v6.1 (1430) exist, the nodes have an
//	   InternalIP of each family, every pod two pod IPs (one per family, in
//	   its node's subnets), the Service web two ClusterIPs
//	4  under kube-proxy in iptables mode, then restarted in nftables mode
//	   (which removes the iptables rules; the tier checks that the Services
//	   are in the new mode's rules only, both families'):
//	   2  over each family: the web pods (a Deployment, one per node) reach
//	      each other across VXLAN (flannel.1, flannel-v6.1) and see each
//	      other's pod IP; each node reaches both pods
//	   3  the ClusterIP of each family of the dual-stack Service web
//	      (RequireDualStack) from both pods reaches both backends, the one
//	      on the other node too; each pod itself (hairpin, IPv4); NodePort
//	      and hostPort (portmap) at both node addresses from outside the
//	      cluster
//	8  over each family: ping with DF of the largest size the pods' MTU
//	   (FLANNEL_MTU 1430, flannel-v6.1's) allows across nodes, one byte
//	   more refused, 10 MB over HTTP
//	9  cluster DNS: CoreDNS behind kube-dns (10.96.0.10, the kubelets'
//	   clusterDNS) answers a Service name over UDP and TCP, also from the
//	   CoreDNS pod on the other node (EDNS NSID names the answering pod)
//	7  50 pods created and deleted on one node leave no reservation (of
//	   either family) and no veth
//	5  kubectl rollout restart ds/weft under a 20 ms pod↔pod ping over each
//	   family: no loss, same subnets
//	6  weftd kept off node2 (a NoExecute taint the DaemonSet does not
//	   tolerate): the node stays Ready while subnet.env stays; without
//	   subnet.env CNI STATUS fails and the node is NotReady within 15 s; weftd
//	   back, Ready with the same subnets
//
// The test pods run test/kube/testpod (server and clients); the sandbox
// image is test/kube/pause; both images, and CoreDNS's, are written by
// test/image. TestMain builds them and weft-etcd.
//
// Run it with `make test-kube` (it builds what is missing: `make kube-bins`,
// `make image`), or as root with
//
//	WEFT_KUBE_BIN=$(make -s kube-cache-dir) WEFT_IMAGE=$PWD/bin/weft-image.tar \
//	    go test -count=1 -v ./test/kube
//
// Without root, with -short or without those variables every test skips.
// -kube.logs=DIR copies every daemon's log (and weftd's) to DIR.
package kube
