package manifests_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

	// wantConflist is the conflist weft installs on a node (flannel's, with
	// the weft plugin in place of flannel's); 10-weft.conflist and the
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
	jsonEqual(t, "ConfigMap "+conflistFile+" vs wantConflist", inCM, []byte(wantConflist))
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
