package cluster

import (
	"fmt"
	"path/filepath"
)

// containerdConfig is containerd's config (version 3) for the node. Paths
// under /run are the node's own /run; root and the opt plugin's directory
// are under the node's Dir, so nothing lands in the host's /var/lib or /opt.
func (n *Node) containerdConfig() string {
	return fmt.Sprintf(`version = 3
root = %q
state = '/run/containerd'
imports = []

[grpc]
  address = %q

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = %q

  [plugins.'io.containerd.cri.v1.runtime']
    enable_cdi = false
    # containerd asks for oom_score_adj -998 for the sandboxes; where the
    # machine withholds CAP_SYS_RESOURCE that fails every pod ("can't get
    # final child's PID from pipe: EOF") unless it is restricted.
    restrict_oom_score_adj = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '/usr/sbin/runc'
        SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['/opt/cni/bin']
      conf_dir = '/etc/cni/net.d'
      max_conf_num = 1
      # lo of a pod is set up by containerd itself: the node has no
      # loopback CNI plugin (weft installs only weft and portmap).
      use_internal_loopback = true

  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'

  [plugins.'io.containerd.internal.v1.opt']
    path = %q

  [plugins.'io.containerd.nri.v1.nri']
    disable = true
`, filepath.Join(n.Dir, "containerd"), containerdSock, n.c.opts.PauseImage, filepath.Join(n.Dir, "containerd-opt"))
}

// kubeletConfig is the KubeletConfiguration of the node: cgroupfs under its
// own cgroup root (two kubelets sharing one delete each other's pod cgroups
// as orphans), cgroup v1 allowed, anonymous access to its API (a test
// cluster), cluster DNS at the kube-dns Service.
func (n *Node) kubeletConfig() string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /%s
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%s
imageServiceEndpoint: unix://%s
address: %s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
rotateCertificates: false
serverTLSBootstrap: false
protectKernelDefaults: false
clusterDNS:
- %s
clusterDomain: cluster.local
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%%
  imagefs.available: 2%%
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
`, n.Cgroup, containerdSock, containerdSock, n.IP, ClusterDNSIP)
}

// proxyConfig is kube-proxy's configuration in mode, dual stack (the node
// has an InternalIP of each family and clusterCIDR lists both pod
// networks, so it programs the Services of both). Every conntrack field
// is 0 so that it leaves the machine-wide conntrack settings alone; health
// and metrics listen on the node's loopback.
func (n *Node) proxyConfig(mode string) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %s
hostnameOverride: %s
mode: %s
clusterCIDR: %s
nodePortAddresses:
- primary
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, n.c.Kubeconfig(), n.Name, mode, dualList(PodCIDR, PodCIDR6))
}
