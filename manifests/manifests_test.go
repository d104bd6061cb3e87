package manifests_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
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
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/weftnet/weft/lease"
)

const (
	manifestFile = "weft.yaml"
	netConfFile  = "net-conf.json"
	conflistFile = "10-weft.conflist"

	namespace     = "kube-weft"
	configMapName = "weft-cfg"
	etcdSecret    = "weft-etcd"

	// wantConflist is the conflist of FORMATS.md; 10-weft.conflist and the
	// ConfigMap must both carry it.
	wantConflist = `{"name":"cbr0","cniVersion":"1.0.0","cniVersions":["1.0.0","1.1.0"],"plugins":[{"type":"weft","hairpinMode":true,"isDefaultGateway":true},{"type":"portmap","capabilities":{"portMappings":true}}]}`
)

// ---------------------------------------------------------------------------
// Strict decoding

// splitDocuments splits a multi-document YAML stream on "---" lines. Documents
// holding nothing but comments and blank lines are dropped.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		if !onlyComments(cur.Bytes()) {
			docs = append(docs, bytes.Clone(cur.Bytes()))
		}
		cur.Reset()
	}
	for line := range strings.Lines(string(data)) {
		if strings.TrimRight(line, " \t\r\n") == "---" {
			flush()
			continue
		}
		cur.WriteString(line)
	}
	flush()
	return docs
}

func onlyComments(doc []byte) bool {
	for line := range strings.Lines(string(doc)) {
		l := strings.TrimSpace(line)
		if l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// decodeStrict decodes one YAML document into v the way the API server's
// strict field validation does: duplicate keys, unknown fields and wrongly
// cased field names are errors.
func decodeStrict(doc []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return fmt.Errorf("yaml: %w", err)
	}
	strictErrs, err := sigsjson.UnmarshalStrict(j, v,
		sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return errors.Join(strictErrs...)
}

// newObject returns an empty typed object for an apiVersion and kind.
func newObject(tm metav1.TypeMeta) (any, error) {
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Namespace":
		return &corev1.Namespace{}, nil
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "apps/v1 DaemonSet":
		return &appsv1.DaemonSet{}, nil
	}
	return nil, fmt.Errorf("unexpected object apiVersion=%q kind=%q", tm.APIVersion, tm.Kind)
}

// decodeObject reads a document's apiVersion and kind, then decodes it
// strictly into the matching API type.
func decodeObject(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, fmt.Errorf("read apiVersion/kind: %w", err)
	}
	obj, err := newObject(tm)
	if err != nil {
		return nil, err
	}
	if err := decodeStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return obj, nil
}

// manifest is weft.yaml, decoded.
type manifest struct {
	ns *corev1.Namespace
	sa *corev1.ServiceAccount
	cm *corev1.ConfigMap
	ds *appsv1.DaemonSet
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// loadManifest decodes every document of weft.yaml strictly and requires
// exactly one Namespace, ServiceAccount, ConfigMap and DaemonSet.
func loadManifest(t *testing.T) manifest {
	t.Helper()
	var m manifest
	seen := map[string]int{}
	for i, doc := range splitDocuments(readFile(t, manifestFile)) {
		obj, err := decodeObject(doc)
		if err != nil {
			t.Fatalf("%s document %d: %v", manifestFile, i+1, err)
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			m.ns = o
			seen["Namespace"]++
		case *corev1.ServiceAccount:
			m.sa = o
			seen["ServiceAccount"]++
		case *corev1.ConfigMap:
			m.cm = o
			seen["ConfigMap"]++
		case *appsv1.DaemonSet:
			m.ds = o
			seen["DaemonSet"]++
		default:
			// A Secret here would overwrite the user's etcd credentials on
			// every `kubectl apply`.
			t.Fatalf("%s document %d: %T is not expected in the manifest", manifestFile, i+1, obj)
		}
	}
	want := map[string]int{"Namespace": 1, "ServiceAccount": 1, "ConfigMap": 1, "DaemonSet": 1}
	if !reflect.DeepEqual(seen, want) {
		t.Fatalf("%s: objects %v, want %v", manifestFile, seen, want)
	}
	return m
}

func TestManifestDecodesStrictly(t *testing.T) {
	m := loadManifest(t)
	if m.ns.Name != namespace {
		t.Errorf("namespace %q, want %q", m.ns.Name, namespace)
	}
	for _, om := range []metav1.ObjectMeta{m.sa.ObjectMeta, m.cm.ObjectMeta, m.ds.ObjectMeta} {
		if om.Namespace != namespace {
			t.Errorf("%s is in namespace %q, want %q", om.Name, om.Namespace, namespace)
		}
	}
	if m.cm.Name != configMapName {
		t.Errorf("ConfigMap %q, want %q", m.cm.Name, configMapName)
	}
}

// TestStrictDecodingRejects proves the decoder used above is strict: a
// mutated copy of the real DaemonSet document must fail.
func TestStrictDecodingRejects(t *testing.T) {
	var dsDoc string
	for _, doc := range splitDocuments(readFile(t, manifestFile)) {
		if bytes.Contains(doc, []byte("kind: DaemonSet")) {
			dsDoc = string(doc)
		}
	}
	if dsDoc == "" {
		t.Fatal("no DaemonSet document")
	}
	if _, err := decodeObject([]byte(dsDoc)); err != nil {
		t.Fatalf("unmodified DaemonSet: %v", err)
	}
	mutate := func(t *testing.T, old, repl string) []byte {
		t.Helper()
		if !strings.Contains(dsDoc, old) {
			t.Fatalf("DaemonSet document lacks %q", old)
		}
		return []byte(strings.Replace(dsDoc, old, repl, 1))
	}
	cases := []struct {
		name, old, repl, wantErr string
	}{
		{"typo field", "hostNetwork: true", "hostNetwrok: true", "hostNetwrok"},
		{"wrong case", "hostNetwork: true", "hostnetwork: true", "hostnetwork"},
		{"typo pod spec field", "priorityClassName:", "priorityClass:", "priorityClass"},
		{"unknown field in probe", "path: /healthz", "paht: /healthz", "paht"},
		{"duplicate key", "hostNetwork: true", "hostNetwork: true\n      hostNetwork: false", "hostNetwork"},
		{"wrong type", "maxUnavailable: 1", "maxUnavailable: [1]", "maxUnavailable"},
		{"unknown kind", "kind: DaemonSet", "kind: DaemonSett", "DaemonSett"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeObject(mutate(t, tc.old, tc.repl))
			if err == nil {
				t.Fatalf("replacing %q by %q decoded without error", tc.old, tc.repl)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not name %q", err, tc.wantErr)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Namespace, ConfigMap, net-conf.json, conflist

func TestNamespacePodSecurity(t *testing.T) {
	m := loadManifest(t)
	if got := m.ns.Labels["pod-security.kubernetes.io/enforce"]; got != "privileged" {
		t.Errorf("label pod-security.kubernetes.io/enforce = %q, want privileged", got)
	}
}

func jsonEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("%s (expected side): %v", what, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s differs:\n got %s\nwant %s", what, compact(got), compact(want))
	}
}

func compact(b []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return string(b)
	}
	return buf.String()
}

func TestConfigMapKeys(t *testing.T) {
	m := loadManifest(t)
	var keys []string
	for k := range m.cm.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{conflistFile, netConfFile}; !slices.Equal(keys, want) {
		t.Errorf("ConfigMap keys %v, want %v", keys, want)
	}
	if len(m.cm.BinaryData) != 0 {
		t.Errorf("ConfigMap has binaryData %v", m.cm.BinaryData)
	}
}

func TestConflist(t *testing.T) {
	m := loadManifest(t)
	inCM := []byte(m.cm.Data[conflistFile])
	jsonEqual(t, "ConfigMap "+conflistFile+" vs FORMATS.md", inCM, []byte(wantConflist))
	t.Run("file", func(t *testing.T) {
		onDisk, err := os.ReadFile(conflistFile)
		if errors.Is(err, os.ErrNotExist) {
			t.Skipf("%s does not exist yet", conflistFile)
		}
		if err != nil {
			t.Fatal(err)
		}
		jsonEqual(t, "ConfigMap "+conflistFile+" vs manifests/"+conflistFile, inCM, onDisk)
	})
}

func TestNetConf(t *testing.T) {
	m := loadManifest(t)
	onDisk := readFile(t, netConfFile)
	if !json.Valid(onDisk) {
		t.Fatalf("%s is not valid JSON", netConfFile)
	}
	jsonEqual(t, "ConfigMap "+netConfFile+" vs manifests/"+netConfFile, []byte(m.cm.Data[netConfFile]), onDisk)

	var nc struct {
		Network   string
		SubnetLen int
		Backend   struct {
			Type string
			VNI  int
			Port int
		}
	}
	if err := json.Unmarshal(onDisk, &nc); err != nil {
		t.Fatal(err)
	}
	if nc.Network != "10.244.0.0/16" || nc.SubnetLen != 24 || nc.Backend.Type != "vxlan" || nc.Backend.VNI != 1 || nc.Backend.Port != 8472 {
		t.Errorf("%s = %+v, want 10.244.0.0/16, /24, vxlan VNI 1 port 8472", netConfFile, nc)
	}
	// What `weftd init-network --file` will accept.
	if _, err := lease.ParseNetwork(onDisk); err != nil {
		t.Errorf("lease.ParseNetwork(%s): %v", netConfFile, err)
	}
}

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

// ---------------------------------------------------------------------------
// Init container: installs the CNI binaries, never the conflist

// conflistPluginTypes returns the plugin types the ConfigMap's conflist names.
func conflistPluginTypes(t *testing.T, m manifest) []string {
	t.Helper()
	var cl struct {
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(m.cm.Data[conflistFile]), &cl); err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, p := range cl.Plugins {
		types = append(types, p.Type)
	}
	return types
}

// installScript returns the init container and its `sh -c` script.
func installScript(t *testing.T, m manifest) (corev1.Container, string) {
	t.Helper()
	ics := m.ds.Spec.Template.Spec.InitContainers
	if len(ics) != 1 {
		t.Fatalf("%d init containers, want 1", len(ics))
	}
	ic := ics[0]
	cmd := slices.Concat(ic.Command, ic.Args)
	if len(cmd) != 3 || path.Base(cmd[0]) != "sh" || cmd[1] != "-c" {
		t.Fatalf("init container runs %q, want sh -c <script>", cmd)
	}
	return ic, cmd[2]
}

const cniBinDir = "/opt/cni/bin"

func TestInitContainerInstallsBinariesAtomically(t *testing.T) {
	m := loadManifest(t)
	ic, script := installScript(t, m)

	vm := mountOf(ic, cniBinDir)
	if vm == nil || vm.ReadOnly {
		t.Fatalf("init container has no writable mount at %s", cniBinDir)
	}
	if v := volume(t, m, vm.Name); v.HostPath == nil || v.HostPath.Path != cniBinDir {
		t.Errorf("init container's %s is not the host's %s", cniBinDir, cniBinDir)
	}
	for _, vm := range ic.VolumeMounts {
		if v := volume(t, m, vm.Name); v.HostPath != nil && v.HostPath.Path == "/etc/cni/net.d" {
			t.Error("init container mounts /etc/cni/net.d: the conflist is the agent's to install")
		}
	}
	if strings.Contains(script, "conflist") || strings.Contains(script, "/etc/cni") {
		t.Errorf("init script touches the CNI config:\n%s", script)
	}

	// Simple commands, one per line (no loops), so each step can be checked.
	var cmds [][]string
	for line := range strings.Lines(script) {
		for part := range strings.SplitSeq(line, "&&") {
			if f := strings.Fields(part); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
				cmds = append(cmds, f)
			}
		}
	}
	operands := func(f []string) []string {
		var out []string
		for _, a := range f[1:] {
			if !strings.HasPrefix(a, "-") {
				out = append(out, strings.Trim(a, `"'`))
			}
		}
		return out
	}
	for _, bin := range conflistPluginTypes(t, m) {
		t.Run(bin, func(t *testing.T) {
			final := path.Join(cniBinDir, bin)
			cpAt, tmp := -1, ""
			for i, f := range cmds {
				if ops := operands(f); f[0] == "cp" && len(ops) == 2 && path.Base(ops[0]) == bin {
					cpAt, tmp = i, ops[1]
					break
				}
			}
			if cpAt < 0 {
				t.Fatalf("no `cp <image>/%s <tmp>` in the init script", bin)
			}
			if path.Dir(tmp) != cniBinDir || tmp == final {
				t.Fatalf("%s is copied to %s: want a temporary name in %s, then mv", bin, tmp, cniBinDir)
			}
			if !strings.HasPrefix(path.Base(tmp), ".") {
				t.Errorf("temporary name %s is not hidden; the runtime could pick it up as a plugin", tmp)
			}
			mvAt := slices.IndexFunc(cmds, func(f []string) bool {
				ops := operands(f)
				return f[0] == "mv" && len(ops) == 2 && ops[0] == tmp && ops[1] == final
			})
			if mvAt < cpAt {
				t.Errorf("no `mv %s %s` after the copy", tmp, final)
			}
			for _, f := range cmds {
				if ops := operands(f); f[0] != "mv" && slices.Contains(ops, final) {
					t.Errorf("%q writes %s in place", strings.Join(f, " "), final)
				}
			}
		})
	}
}

// TestInitContainerScriptRuns runs the init script under /bin/sh with its
// paths moved into temporary directories: twice, over an existing binary.
func TestInitContainerScriptRuns(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	m := loadManifest(t)
	_, script := installScript(t, m)
	const imageDir = "/opt/weft/cni"
	if !strings.Contains(script, imageDir) {
		t.Fatalf("init script does not copy from %s (where the Dockerfile puts them)", imageDir)
	}
	src, dst := t.TempDir(), t.TempDir()
	script = strings.ReplaceAll(script, imageDir, src)
	script = strings.ReplaceAll(script, cniBinDir, dst)

	bins := conflistPluginTypes(t, m)
	for _, b := range bins {
		if err := os.WriteFile(filepath.Join(src, b), []byte("#!/bin/sh\n# "+b+" new\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Decoys: the image's conflist must not land in the bin dir, and an old
	// binary must be replaced by a rename (a new inode), not rewritten.
	if err := os.WriteFile(filepath.Join(src, conflistFile), []byte(wantConflist), 0o644); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dst, bins[0])
	if err := os.WriteFile(old, []byte("old"), 0o755); err != nil {
		t.Fatal(err)
	}
	oldInfo, err := os.Stat(old)
	if err != nil {
		t.Fatal(err)
	}

	for run := 1; run <= 2; run++ {
		out, err := exec.Command(sh, "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("run %d: %v\n%s", run, err, out)
		}
		entries, err := os.ReadDir(dst)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		want := slices.Sorted(slices.Values(bins))
		if !slices.Equal(names, want) {
			t.Fatalf("run %d: %s holds %v, want exactly %v", run, cniBinDir, names, want)
		}
		for _, b := range bins {
			fi, err := os.Stat(filepath.Join(dst, b))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm()&0o111 == 0 {
				t.Errorf("run %d: %s is not executable (%v)", run, b, fi.Mode())
			}
			got, _ := os.ReadFile(filepath.Join(dst, b))
			if want, _ := os.ReadFile(filepath.Join(src, b)); !bytes.Equal(got, want) {
				t.Errorf("run %d: %s content %q, want %q", run, b, got, want)
			}
		}
		if run == 1 {
			newInfo, err := os.Stat(old)
			if err != nil {
				t.Fatal(err)
			}
			if os.SameFile(oldInfo, newInfo) {
				t.Errorf("%s was rewritten in place, not replaced by a rename", bins[0])
			}
		}
	}
}
