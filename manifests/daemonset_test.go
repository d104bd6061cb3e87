package manifests_test

import (
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ---------------------------------------------------------------------------
// DaemonSet

func TestDaemonSetPod(t *testing.T) {
	m := loadManifest(t)
	ds := m.ds
	pod := ds.Spec.Template.Spec

	if ds.Name != "weft" {
		t.Errorf("DaemonSet name %q, want weft", ds.Name)
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		t.Fatalf("selector: %v", err)
	}
	if sel.Empty() || !selectorMatches(ds.Spec.Selector, ds.Spec.Template.Labels) {
		t.Errorf("selector %v does not select the template labels %v", ds.Spec.Selector, ds.Spec.Template.Labels)
	}
	if !pod.HostNetwork {
		t.Error("hostNetwork is not true")
	}
	if pod.DNSPolicy == corev1.DNSClusterFirstWithHostNet {
		t.Error("dnsPolicy ClusterFirstWithHostNet: cluster DNS needs the pod network weft provides")
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q, want system-node-critical", pod.PriorityClassName)
	}
	if pod.ServiceAccountName != m.sa.Name {
		t.Errorf("serviceAccountName %q, want %q", pod.ServiceAccountName, m.sa.Name)
	}
	if !slices.ContainsFunc(pod.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Key == "" && tl.Operator == corev1.TolerationOpExists && tl.Effect == corev1.TaintEffectNoSchedule
	}) {
		t.Errorf("tolerations %+v: none tolerates every NoSchedule taint (operator Exists, effect NoSchedule, no key)", pod.Tolerations)
	}
	us := ds.Spec.UpdateStrategy
	if us.Type != appsv1.RollingUpdateDaemonSetStrategyType || us.RollingUpdate == nil ||
		us.RollingUpdate.MaxUnavailable == nil || *us.RollingUpdate.MaxUnavailable != intstr.FromInt32(1) {
		t.Errorf("updateStrategy %+v, want RollingUpdate with maxUnavailable 1", us)
	}
	if len(pod.InitContainers) != 1 || len(pod.Containers) != 1 {
		t.Fatalf("%d init containers and %d containers, want 1 and 1", len(pod.InitContainers), len(pod.Containers))
	}
	if a, b := pod.InitContainers[0].Image, pod.Containers[0].Image; a == "" || a != b {
		t.Errorf("init container image %q and agent image %q must be the same (binaries and agent from one build)", a, b)
	}
}

func selectorMatches(s *metav1.LabelSelector, l map[string]string) bool {
	sel, err := metav1.LabelSelectorAsSelector(s)
	return err == nil && sel.Matches(labels.Set(l))
}

// agent returns the DaemonSet's only container.
func agent(t *testing.T, m manifest) corev1.Container {
	t.Helper()
	cs := m.ds.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("%d containers, want 1", len(cs))
	}
	return cs[0]
}

// flag returns the value of --name in args (--name=v or --name v; a bare
// boolean flag gives "true").
func flag(args []string, name string) (string, bool) {
	for i, a := range args {
		switch {
		case a == "--"+name:
			if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				return args[i+1], true
			}
			return "true", true
		case strings.HasPrefix(a, "--"+name+"="):
			return strings.TrimPrefix(a, "--"+name+"="), true
		}
	}
	return "", false
}

func TestAgentArgs(t *testing.T) {
	m := loadManifest(t)
	c := agent(t, m)
	cmdline := slices.Concat(c.Command, c.Args)
	if len(cmdline) < 2 || path.Base(cmdline[0]) != "weftd" || cmdline[1] != "run" {
		t.Fatalf("command line %q, want weftd run ...", cmdline)
	}
	args := cmdline[2:]

	if v, ok := flag(args, "ip-masq"); !ok || v != "true" {
		t.Errorf("--ip-masq missing or not true in %q", args)
	}
	if _, ok := flag(args, "iface-can-reach"); ok {
		t.Errorf("--iface-can-reach must be left out: %q", args)
	}
	if v, _ := flag(args, "cni-conf-dir"); v != "/etc/cni/net.d" {
		t.Errorf("--cni-conf-dir = %q, want /etc/cni/net.d", v)
	}
	if v, _ := flag(args, "node-name"); v != "$(NODE_NAME)" {
		t.Errorf("--node-name = %q, want $(NODE_NAME)", v)
	}
	nodeName := envVar(c, "NODE_NAME")
	if nodeName == nil || nodeName.ValueFrom == nil || nodeName.ValueFrom.FieldRef == nil ||
		nodeName.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("env NODE_NAME = %+v, want fieldRef spec.nodeName", nodeName)
	}
	// The health server must answer on the node IP: with hostNetwork the
	// kubelet probes the pod IP, which is the node's.
	if v, ok := flag(args, "healthz-ip"); ok && v != "0.0.0.0" && v != "" {
		t.Errorf("--healthz-ip = %q: the kubelet's probes would not reach it", v)
	}
	// The conflist source is the ConfigMap's copy.
	src, _ := flag(args, "cni-conf-source")
	if mountOf(c, path.Dir(src)) == nil || path.Base(src) != conflistFile {
		t.Errorf("--cni-conf-source = %q, want %s inside the ConfigMap mount", src, conflistFile)
	} else if vol := volume(t, m, mountOf(c, path.Dir(src)).Name); vol.ConfigMap == nil || vol.ConfigMap.Name != m.cm.Name {
		t.Errorf("--cni-conf-source %q is not backed by ConfigMap %s", src, m.cm.Name)
	}
	if sf, ok := flag(args, "subnet-file"); ok && sf != "/run/flannel/subnet.env" {
		t.Errorf("--subnet-file = %q, want /run/flannel/subnet.env (the weft CNI plugin reads it there)", sf)
	}
}

// healthzPort returns --healthz-port from the agent's args.
func healthzPort(t *testing.T, c corev1.Container) int32 {
	t.Helper()
	v, ok := flag(c.Args, "healthz-port")
	if !ok {
		t.Fatalf("--healthz-port missing from %q", c.Args)
	}
	p, err := strconv.ParseInt(v, 10, 32)
	if err != nil || p <= 0 || p > 65535 {
		t.Fatalf("--healthz-port = %q: want a port number", v)
	}
	return int32(p)
}

// probePort resolves a probe's port (number or container port name).
func probePort(c corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return -1
}

func TestAgentProbes(t *testing.T) {
	m := loadManifest(t)
	c := agent(t, m)
	port := healthzPort(t, c)
	for _, tc := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"liveness", c.LivenessProbe, "/healthz"},
		{"readiness", c.ReadinessProbe, "/readyz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.probe == nil || tc.probe.HTTPGet == nil {
				t.Fatalf("no httpGet %s probe", tc.name)
			}
			g := tc.probe.HTTPGet
			if g.Path != tc.path {
				t.Errorf("path %q, want %q", g.Path, tc.path)
			}
			if got := probePort(c, g.Port); got != port {
				t.Errorf("port %s resolves to %d, want --healthz-port %d", g.Port.String(), got, port)
			}
			if g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP {
				t.Errorf("scheme %q, want HTTP", g.Scheme)
			}
			if g.Host != "" {
				t.Errorf("host %q: leave it empty (the node IP)", g.Host)
			}
		})
	}
	for _, cp := range c.Ports {
		if cp.Name == "healthz" && (cp.ContainerPort != port || (cp.HostPort != 0 && cp.HostPort != port)) {
			t.Errorf("container port healthz %+v does not match --healthz-port %d", cp, port)
		}
	}
}

func TestAgentSecurityAndResources(t *testing.T) {
	m := loadManifest(t)
	c := agent(t, m)
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("no securityContext.capabilities")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("agent is privileged")
	}
	caps := slices.Clone(sc.Capabilities.Add)
	slices.Sort(caps)
	if want := []corev1.Capability{"NET_ADMIN", "NET_RAW"}; !slices.Equal(caps, want) {
		t.Errorf("capabilities add %v, want exactly %v", sc.Capabilities.Add, want)
	}
	for _, ic := range m.ds.Spec.Template.Spec.InitContainers {
		if ic.SecurityContext != nil && ic.SecurityContext.Privileged != nil && *ic.SecurityContext.Privileged {
			t.Errorf("init container %s is privileged", ic.Name)
		}
	}

	req := c.Resources.Requests
	for name, want := range map[corev1.ResourceName]string{corev1.ResourceCPU: "100m", corev1.ResourceMemory: "50Mi"} {
		got, ok := req[name]
		if !ok || got.Cmp(resource.MustParse(want)) != 0 {
			t.Errorf("requests.%s = %v, want %s", name, got.String(), want)
		}
	}
	if lim, ok := c.Resources.Limits[corev1.ResourceMemory]; ok && lim.Cmp(resource.MustParse("256Mi")) < 0 {
		t.Errorf("limits.memory = %s: below 256Mi the agent is OOM-killed on large clusters", lim.String())
	}
}

func volume(t *testing.T, m manifest, name string) corev1.Volume {
	t.Helper()
	for _, v := range m.ds.Spec.Template.Spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %q", name)
	return corev1.Volume{}
}

func mountOf(c corev1.Container, mountPath string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if path.Clean(c.VolumeMounts[i].MountPath) == path.Clean(mountPath) {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

func envVar(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func TestAgentVolumes(t *testing.T) {
	m := loadManifest(t)
	c := agent(t, m)
	hostPaths := []struct {
		mount string
		typ   corev1.HostPathType
	}{
		{"/run/flannel", corev1.HostPathDirectoryOrCreate},
		{"/etc/cni/net.d", corev1.HostPathDirectoryOrCreate},
		{"/opt/cni/bin", corev1.HostPathDirectoryOrCreate},
		{"/var/lib/cni", corev1.HostPathDirectoryOrCreate},
		{"/run/xtables.lock", corev1.HostPathFileOrCreate},
	}
	for _, hp := range hostPaths {
		t.Run(hp.mount, func(t *testing.T) {
			vm := mountOf(c, hp.mount)
			if vm == nil {
				t.Fatalf("no mount at %s", hp.mount)
			}
			v := volume(t, m, vm.Name)
			if v.HostPath == nil {
				t.Fatalf("volume %s is not a hostPath", v.Name)
			}
			if v.HostPath.Path != hp.mount {
				t.Errorf("hostPath %s mounted at %s", v.HostPath.Path, hp.mount)
			}
			if v.HostPath.Type == nil || *v.HostPath.Type != hp.typ {
				got := "unset"
				if v.HostPath.Type != nil {
					got = string(*v.HostPath.Type)
				}
				t.Errorf("hostPath type %s, want %s", got, hp.typ)
			}
			if vm.SubPath != "" || vm.SubPathExpr != "" {
				t.Errorf("mount %s uses a subPath", hp.mount)
			}
		})
	}
	for _, p := range []string{"/run/flannel", "/etc/cni/net.d", "/var/lib/cni", "/run/xtables.lock"} {
		if vm := mountOf(c, p); vm != nil && vm.ReadOnly {
			t.Errorf("%s is mounted read-only; weftd writes there", p)
		}
	}

	t.Run("/etc/weft", func(t *testing.T) {
		vm := mountOf(c, "/etc/weft")
		if vm == nil {
			t.Fatal("no mount at /etc/weft")
		}
		v := volume(t, m, vm.Name)
		if v.ConfigMap == nil || v.ConfigMap.Name != m.cm.Name {
			t.Fatalf("/etc/weft is not ConfigMap %s: %+v", m.cm.Name, v.VolumeSource)
		}
		for _, it := range v.ConfigMap.Items {
			if it.Key == conflistFile && it.Path != conflistFile {
				t.Errorf("ConfigMap item %s is projected as %s", it.Key, it.Path)
			}
		}
		if len(v.ConfigMap.Items) > 0 && !slices.ContainsFunc(v.ConfigMap.Items, func(it corev1.KeyToPath) bool { return it.Key == conflistFile }) {
			t.Errorf("ConfigMap items %v leave out %s", v.ConfigMap.Items, conflistFile)
		}
	})

	t.Run("/etc/weft/etcd", func(t *testing.T) {
		vm := mountOf(c, "/etc/weft/etcd")
		if vm == nil {
			t.Fatal("no mount at /etc/weft/etcd")
		}
		v := volume(t, m, vm.Name)
		if v.Secret == nil || v.Secret.SecretName != etcdSecret {
			t.Fatalf("/etc/weft/etcd is not Secret %s: %+v", etcdSecret, v.VolumeSource)
		}
		if v.Secret.Optional != nil && *v.Secret.Optional {
			t.Error("etcd Secret volume is optional; it must be required")
		}
		for _, it := range v.Secret.Items {
			if it.Key != it.Path {
				t.Errorf("Secret item %s projected as %s", it.Key, it.Path)
			}
		}
	})
}

func TestAgentEtcdFromSecret(t *testing.T) {
	m := loadManifest(t)
	c := agent(t, m)

	names := map[string]bool{}
	for _, e := range c.Env {
		if names[e.Name] {
			t.Errorf("env %s set twice", e.Name)
		}
		names[e.Name] = true
	}

	ep := envVar(c, "WEFT_ETCD_ENDPOINTS")
	if ep == nil || ep.ValueFrom == nil || ep.ValueFrom.SecretKeyRef == nil {
		t.Fatalf("WEFT_ETCD_ENDPOINTS = %+v, want a secretKeyRef", ep)
	}
	ref := ep.ValueFrom.SecretKeyRef
	if ref.Name != etcdSecret || ref.Key != "endpoints" {
		t.Errorf("WEFT_ETCD_ENDPOINTS from secret %s key %s, want %s key endpoints", ref.Name, ref.Key, etcdSecret)
	}
	if ref.Optional != nil && *ref.Optional {
		t.Error("WEFT_ETCD_ENDPOINTS is optional: without it weftd would start an embedded etcd per node")
	}
	if _, ok := flag(c.Args, "etcd-endpoints"); ok {
		t.Error("--etcd-endpoints on the command line overrides the Secret")
	}

	secretMount := mountOf(c, "/etc/weft/etcd")
	if secretMount == nil {
		t.Fatal("no etcd Secret mount")
	}
	for env, key := range map[string]string{
		"WEFT_ETCD_CAFILE":   "ca.crt",
		"WEFT_ETCD_CERTFILE": "tls.crt",
		"WEFT_ETCD_KEYFILE":  "tls.key",
	} {
		e := envVar(c, env)
		if e == nil {
			t.Errorf("env %s missing", env)
			continue
		}
		if want := path.Join(secretMount.MountPath, key); e.Value != want || e.ValueFrom != nil {
			t.Errorf("%s = %q, want %q (key %s of Secret %s)", env, e.Value, want, key, etcdSecret)
		}
		if _, ok := flag(c.Args, strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(env, "WEFT_"), "_", "-"))); ok {
			t.Errorf("the command line overrides %s", env)
		}
	}
	v := volume(t, m, secretMount.Name)
	if v.Secret != nil && len(v.Secret.Items) > 0 {
		for _, key := range []string{"ca.crt", "tls.crt", "tls.key"} {
			if !slices.ContainsFunc(v.Secret.Items, func(it corev1.KeyToPath) bool { return it.Key == key }) {
				t.Errorf("Secret items leave out %s", key)
			}
		}
	}
}
