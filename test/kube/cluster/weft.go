package cluster

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ShippedImage is the image manifests/weft.yaml names; the kustomization
// replaces it with the image under test.
const ShippedImage = "ghcr.io/weftnet/weft"

// Kustomization is the kustomization.yaml the tier installs weft with, as
// the README tells a user to write it next to a copy of manifests/weft.yaml
// (kustomize loads no file from outside the kustomization's directory): the
// image under test, the etcd Secret, and, because this etcd is plain http,
// the three TLS file variables deleted from the DaemonSet.
func Kustomization(imageName, imageTag, etcdEndpoints string) string {
	return fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - weft.yaml                    # a copy of manifests/weft.yaml
images:
  - name: %s   # both containers of the DaemonSet
    newName: %s
    newTag: "%s"               # quoted: a hash tag like 9031e14 is a number in YAML
secretGenerator:
  - name: weft-etcd
    namespace: kube-weft
    literals:
      - endpoints=%s
    # TLS: files: [ca.crt=ca.pem, tls.crt=client.pem, tls.key=client-key.pem]
generatorOptions:
  disableNameSuffixHash: true    # the DaemonSet refers to the Secret weft-etcd
patches:
  # Plain-http etcd: no TLS files (weft refuses them with an http:// endpoint).
  # With TLS leave this patch out; with a CA only, delete CERTFILE and KEYFILE.
  - patch: |-
      apiVersion: apps/v1
      kind: DaemonSet
      metadata:
        name: weft
        namespace: kube-weft
      spec:
        template:
          spec:
            containers:
              - name: weftd
                env:
                  - name: WEFT_ETCD_CAFILE
                    $patch: delete
                  - name: WEFT_ETCD_CERTFILE
                    $patch: delete
                  - name: WEFT_ETCD_KEYFILE
                    $patch: delete
`, ShippedImage, imageName, imageTag, etcdEndpoints)
}

// NetConfPatch is one more item for Kustomization's patches list: it
// replaces net-conf.json in the ConfigMap weft-cfg (what `weftd
// init-network --file /etc/weft/net-conf.json` writes to etcd) with conf,
// e.g. NetConf to make the network dual stack.
func NetConfPatch(conf string) string {
	var b strings.Builder
	b.WriteString(`  # The network config init-network writes (here: dual stack).
  - patch: |-
      apiVersion: v1
      kind: ConfigMap
      metadata:
        name: weft-cfg
        namespace: kube-weft
      data:
        net-conf.json: |
`)
	for l := range strings.Lines(strings.TrimSpace(conf) + "\n") {
		b.WriteString("          " + l)
	}
	return b.String()
}

// Install commands, as the README gives them (with the kustomization in the
// directory weft):
//
//	kubectl apply -k weft
//	until kubectl -n kube-weft exec ds/weft -c weftd -- weftd init-network --file /etc/weft/net-conf.json; do sleep 2; done
//	kubectl -n kube-weft rollout status ds/weft --timeout=120s
//
// The exec is retried until a weftd container runs (kubectl exec waits for
// a pod to exist, not for its container); the agents wait for the network
// config, so the DaemonSet is ready only after it.
var (
	InitNetworkArgs = []string{"-n", "kube-weft", "exec", "ds/weft", "-c", "weftd", "--",
		"weftd", "init-network", "--file", "/etc/weft/net-conf.json"}
	InitNetworkRetry  = 2 * time.Second
	RolloutStatusArgs = []string{"-n", "kube-weft", "rollout", "status", "ds/weft", "--timeout=120s"}
)

// ApplyArgs is `kubectl apply -k <dir>`.
func ApplyArgs(dir string) []string { return []string{"apply", "-k", dir} }

// ImageRef reads the first RepoTags entry of a docker-archive tarball
// (manifest.json) and splits it into name and tag.
func ImageRef(tarball string) (name, tag string, err error) {
	f, err := os.Open(tarball)
	if err != nil {
		return "", "", fmt.Errorf("image %s: %w", tarball, err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", "", fmt.Errorf("image %s: no manifest.json (not a docker-archive tarball)", tarball)
		}
		if err != nil {
			return "", "", fmt.Errorf("image %s: %w", tarball, err)
		}
		if h.Name != "manifest.json" {
			continue
		}
		var m []struct{ RepoTags []string }
		if err := json.NewDecoder(tr).Decode(&m); err != nil {
			return "", "", fmt.Errorf("image %s: manifest.json: %w", tarball, err)
		}
		if len(m) == 0 || len(m[0].RepoTags) == 0 {
			return "", "", fmt.Errorf("image %s: manifest.json names no tag", tarball)
		}
		ref := m[0].RepoTags[0]
		i := strings.LastIndex(ref, ":")
		if i < 0 || strings.Contains(ref[i:], "/") {
			return "", "", fmt.Errorf("image %s: %q has no tag", tarball, ref)
		}
		return ref[:i], ref[i+1:], nil
	}
}

// WriteKustomization writes weft.yaml (a byte-for-byte copy of manifest)
// and kustomization.yaml (the README's, plus NetConfPatch(NetConf): the
// cluster is dual stack) into a new directory under the cluster's and
// returns it.
func (c *Cluster) WriteKustomization(manifest, imageName, imageTag string) (string, error) {
	dir := filepath.Join(c.dir, "weft-kustomize")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("kustomization dir: %w", err)
	}
	b, err := os.ReadFile(manifest)
	if err != nil {
		return "", fmt.Errorf("read manifest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "weft.yaml"), b, 0o644); err != nil {
		return "", fmt.Errorf("copy manifest: %w", err)
	}
	k := Kustomization(imageName, imageTag, c.EtcdEndpoint()) + NetConfPatch(NetConf)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		return "", fmt.Errorf("write kustomization: %w", err)
	}
	return dir, nil
}

// WaitFor polls check every 200 ms until it reports done or limit passes; a
// daemon of a node that exits ends the wait at once, with its log.
func (c *Cluster) WaitFor(ctx context.Context, what string, limit time.Duration, check func() (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	why := "not yet"
	for {
		for _, n := range c.Nodes() {
			if err := n.Exited(); err != nil {
				return fmt.Errorf("wait for %s: %s: %w", what, n.Name, err)
			}
		}
		ok, msg := check()
		if ok {
			return nil
		}
		if msg != "" {
			why = msg
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s (%s): %w", what, why, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
