// Package cluster runs a throw-away Kubernetes cluster on one machine, out
// of network and mount namespaces, for the kube test tier (test/kube): the
// control plane and two nodes with containerd, kubelet and kube-proxy built
// by `make kube-bins`. It does not install a network: the tier installs weft
// into it the way a user does (Kustomization, ApplyArgs, InitNetworkArgs),
// with the network config NetConf (NetConfPatch).
//
// The cluster is dual stack, IPv4 the primary family: every namespace on
// the switch has an address of each family (the IPv6 one without duplicate
// address detection), the kubelets run with --node-ip <v4>,<v6>, the
// apiserver hands out ClusterIPs from ServiceCIDR and ServiceCIDR6, and the
// controller manager and kube-proxy get both pod networks as cluster CIDR.
//
//	              <p>-sw: bridge br0 (the underlay switch, 198.18.0.0/24
//	                                   and fd00:198:18::/64)
//	    ┌──────────────────────┬──────────────────────┐
//	<p>-cp                 <p>-node1              <p>-node2
//	198.18.0.254           198.18.0.1             198.18.0.2
//	fd00:198:18::254       fd00:198:18::1         fd00:198:18::2
//	weft-etcd :2379        default routes via .254 and ::254 (kube-proxy
//	kube-apiserver :6443   and weftd take the node's interface from them)
//	controller-manager,    a mount namespace of its own (held by a
//	scheduler (loopback)   holder process): containerd, kubelet,
//	                       kube-proxy; weftd, cni0, flannel.1,
//	                       flannel-v6.1 and the pods once weft is installed
//
// <p> is a random "wk<4 hex>" per cluster, also in the nodes' cgroup roots
// (/<p>-nodeN in every hierarchy) and the cluster directory
// ($TMPDIR/weft-kube-<p>-*), so two runs can share a machine. The apiserver
// and weft share the etcd, as in a small flannel etcd-mode cluster.
//
// A node's mount namespace is not `ip netns exec`'s (which remounts /sys and
// hides the cgroup tree that kubelet and runc need): the holder, started as
// `nsenter --net=<node netns> unshare --mount --propagation private`, gets a
// sysfs of the node's network namespace with the host's cgroup tree bound
// back over /sys/fs/cgroup, and the node's own directories over /run,
// /etc/cni/net.d, /opt/cni/bin, /var/lib/kubelet, /var/lib/cni,
// /var/log/pods and /var/log/containers. A mount point the host lacks is
// made inside an overlay of its nearest existing parent, whose upper layer
// is in the cluster directory: the host's filesystem is never written. Every
// daemon of the node runs under `nsenter -t <holder> -n -m`; the test reads
// a node's files at Node.HostPath.
//
// Invariants:
//   - Nothing is added to the root network namespace: every address, route
//     and listener is inside the cluster's namespaces; the test reaches them
//     through sockets it opens there (lab.NetNS.DialContext) or kubectl run
//     inside the control-plane namespace.
//   - Close (idempotent, also called by the tier's signal handler) stops the
//     daemons by PID, the pods' processes by their cgroups (which carry <p>),
//     the shims by the node's mount namespace, then removes the cgroups, the
//     namespaces and the directory. The daemons die with the test process
//     (Pdeathsig) if it is killed outright.
//   - The machine-wide sysctls the kubelet changes are restored when the last
//     cluster on the machine closes (a shared state file, see sysctl.go).
package cluster
