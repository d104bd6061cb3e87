// Package manifests holds what deploys weft on Kubernetes: weft.yaml (the
// namespace, ConfigMap and DaemonSet), net-conf.json and the CNI conflist;
// the image is built by test/image (`make image`). Its tests decode the
// manifests strictly into the Kubernetes API types and check the settings
// weft depends on.
package manifests
