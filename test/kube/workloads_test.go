package kube

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftnet/weft/test/lab"
)

// weftdOffTaint is the NoExecute taint check 6 puts on a node to keep weftd
// off it: the DaemonSet tolerates only NoSchedule taints, so its pod there
// is evicted and not recreated; the test's own pods tolerate it and stay.
const weftdOffTaint = "weft-tier/weftd-off"

// Ports of the web Deployment: the testpod server on 8080, published as
// hostPort 18080 on its node (portmap) and as NodePort 30080 (Service web).
const (
	webPort  = 8080
	hostPort = 18080
	nodePort = 30080
)

// webYAML is the Deployment the checks talk to: one testpod server per node
// (required anti-affinity), the dual-stack Service web (ClusterIPs and
// NodePort) and one
// Service per node selecting only that node's pod (hairpin: the pod reaches
// itself through its ClusterIP). hp-<node> selects the label the tier puts
// on the pods once it knows where they run.
var webYAML = fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 2
      tolerations:
        # Check 6 keeps weftd off a node with this taint; these pods stay.
        - key: %[5]s
          operator: Exists
          effect: NoExecute
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - labelSelector:
                matchLabels:
                  app: web
              topologyKey: kubernetes.io/hostname
      containers:
        - name: testpod
          image: %[1]s
          imagePullPolicy: Never
          args: ["serve"]
          ports:
            - containerPort: %[2]d
              hostPort: %[3]d
          readinessProbe:
            httpGet:
              path: /
              port: %[2]d
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  type: NodePort
  # A ClusterIP of each family (IPv4 first, the cluster's primary); the
  # NodePort on every node address of both.
  ipFamilyPolicy: RequireDualStack
  selector:
    app: web
  ports:
    - port: 80
      targetPort: %[2]d
      nodePort: %[4]d
---
apiVersion: v1
kind: Service
metadata:
  name: hp-node1
  namespace: default
spec:
  selector:
    app: web
    hairpin: node1
  ports:
    - port: 80
      targetPort: %[2]d
---
apiVersion: v1
kind: Service
metadata:
  name: hp-node2
  namespace: default
spec:
  selector:
    app: web
    hairpin: node2
  ports:
    - port: 80
      targetPort: %[2]d
`, testpodImage, webPort, hostPort, nodePort, weftdOffTaint)

// corednsYAML is cluster DNS as kubeadm sets it up, on the images of this
// machine: CoreDNS (one pod per node) behind the kube-dns Service at the
// kubelets' clusterDNS address. The nsid plugin answers with the pod name,
// so a client learns which CoreDNS pod answered.
var corednsYAML = fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:53 {
        errors
        ready :8181
        nsid
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
spec:
  replicas: 2
  selector:
    matchLabels:
      k8s-app: kube-dns
  template:
    metadata:
      labels:
        k8s-app: kube-dns
    spec:
      dnsPolicy: Default
      terminationGracePeriodSeconds: 2
      tolerations:
        # Check 6 keeps weftd off a node with this taint; these pods stay.
        - key: %[3]s
          operator: Exists
          effect: NoExecute
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - labelSelector:
                matchLabels:
                  k8s-app: kube-dns
              topologyKey: kubernetes.io/hostname
      containers:
        - name: coredns
          image: %[1]s
          imagePullPolicy: Never
          args: ["-conf", "/etc/coredns/Corefile"]
          ports:
            - containerPort: 53
              name: dns
              protocol: UDP
            - containerPort: 53
              name: dns-tcp
              protocol: TCP
          readinessProbe:
            httpGet:
              path: /ready
              port: 8181
            periodSeconds: 1
          volumeMounts:
            - name: config
              mountPath: /etc/coredns
              readOnly: true
      volumes:
        - name: config
          configMap:
            name: coredns
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
spec:
  clusterIP: %[2]s
  selector:
    k8s-app: kube-dns
  ports:
    - name: dns
      port: 53
      protocol: UDP
    - name: dns-tcp
      port: 53
      protocol: TCP
`, corednsImage, clusterDNS(), weftdOffTaint)

func clusterDNS() string { return "10.96.0.10" }

// deployWorkloads starts web and CoreDNS and waits until one pod of each
// runs on every node; it labels the web pods for their hairpin Services.
func (k *tier) deployWorkloads(t *testing.T) {
	t.Helper()
	k.kubectl(t, webYAML+"---\n"+corednsYAML, "apply", "-f", "-")
	k.web = k.readyPods(t, "default", "app=web", len(k.c.Nodes()), 90*time.Second)
	k.dns = k.readyPods(t, "kube-system", "k8s-app=kube-dns", len(k.c.Nodes()), 90*time.Second)
	for _, p := range k.web {
		k.kubectl(t, "", "-n", "default", "label", "pod", p.Name, "hairpin="+p.Spec.NodeName)
	}
	for i, p := range k.web {
		if p.Spec.NodeName != k.c.Nodes()[i].Name {
			t.Fatalf("web pods on %s, %s: want one per node", k.web[0].Spec.NodeName, k.web[1].Spec.NodeName)
		}
	}
}

// service returns the Service ns/name.
func (k *tier) service(ctx context.Context, ns, name string) (*corev1.Service, error) {
	var s corev1.Service
	if err := k.c.Get(ctx, "/api/v1/namespaces/"+ns+"/services/"+name, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// answer is one line of the testpod server: "<pod> <client IP>".
type answer struct {
	pod    string
	client netip.Addr
}

func parseAnswers(out string) ([]answer, error) {
	var as []answer
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			return nil, fmt.Errorf("answer %q: want \"<pod> <client IP>\"", l)
		}
		ip, err := netip.ParseAddr(f[1])
		if err != nil {
			return nil, fmt.Errorf("answer %q: %w", l, err)
		}
		as = append(as, answer{pod: f[0], client: ip})
	}
	return as, nil
}

// httpFrom GETs url n times from inside ns (one connection each) and
// returns the answers.
func httpFrom(ctx context.Context, ns *lab.NetNS, url string, n int) ([]answer, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true}}
	var as []answer
	for range n {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.Do(req)
		if err != nil {
			return as, fmt.Errorf("GET %s from %s: %w", url, ns.Name, err)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return as, fmt.Errorf("GET %s from %s: %s %v", url, ns.Name, resp.Status, err)
		}
		a, err := parseAnswers(string(b))
		if err != nil {
			return as, err
		}
		as = append(as, a...)
	}
	return as, nil
}
