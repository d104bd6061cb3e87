# weft: build, test, demo and benchmarks. `make deps` installs what tests need
# on a fresh Debian machine (only what is missing); `make test` runs it first.

GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/weftnet/weft/agent.Version=$(VERSION) -X github.com/weftnet/weft/plugin.Version=$(VERSION)
GOFLAGS_BUILD := -trimpath -ldflags '$(LDFLAGS)'
export CGO_ENABLED := 0

# Debian packages the tests and benchmarks use: ip/ping in namespaces, the
# etcd 3.4 server and etcdctl (second etcd in tests, README inspection), the
# iptables and nft front ends (portmap and kube-proxy style rules), iperf3,
# mkfs.ext4 (the CNI bench keeps its state on a journaled ext4 image).
# runc is the kube tier's OCI runtime (containerd calls /usr/sbin/runc).
DEB_CMDS := ip:iproute2 ping:iputils-ping etcd:etcd-server etcdctl:etcd-client \
            iptables:iptables nft:nftables iperf3:iperf3 mkfs.ext4:e2fsprogs \
            runc:runc
# Packages checked by their dpkg status, not by a command: busybox-static
# installs /bin/busybox, and so does the dynamically linked `busybox` package it
# conflicts with (apt replaces that one); the images need the static binary.
DEB_PKGS := busybox-static

.PHONY: all build test test-unit lint bench demo deps deps-busybox clean image kube-bins kube-cache-dir kube-images test-kube

all: build

build:
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/weftd ./cmd/weftd
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/weft ./cmd/weft
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/weft-etcd ./cmd/weft-etcd

deps:
	@missing=""; for pair in $(DEB_CMDS); do \
		cmd=$${pair%%:*}; pkg=$${pair##*:}; \
		command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	for pkg in $(DEB_PKGS); do \
		dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q ' installed$$' || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "deps: all present"; fi
	@modprobe vxlan 2>/dev/null || true
	@modprobe br_netfilter 2>/dev/null || true

# Packages that start goroutines run under the race detector (which needs
# cgo, so only that run has it on); every other package runs without it.
MODULE    := github.com/weftnet/weft
RACE_PKGS := ./agent ./backend ./cmd/weftd ./lease ./lease/etcdstore

# The real-Kubernetes tier runs last and alone: it is timing-sensitive (a node
# must turn NotReady within 15 s) and needs both cores.
KUBE_PKG  := ./test/kube

# Unit, privileged (root), end-to-end and real-Kubernetes tests. Run as root
# for the full suite. kube-bins builds only what its cache lacks.
test: deps lint kube-bins image
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 12m $(RACE_PKGS)
	$(GO) test -count=1 -timeout 12m $(filter-out $(RACE_PKGS:./%=$(MODULE)/%) $(KUBE_PKG:./%=$(MODULE)/%),$(shell $(GO) list ./...))
	WEFT_IMAGE=$(abspath $(IMAGE_TAR)) $(GO) test -count=1 -timeout 15m $(KUBE_PKG)

test-unit:
	$(GO) test -short -count=1 ./...

# staticcheck is a tool dependency in go.mod (pinned there, built by the go
# command and cached like any package); it exits non-zero on any finding.
lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

bench: deps build
	$(GO) run ./test/bench $(if $(BENCH_JSON),-json $(BENCH_JSON))

demo: deps build
	$(GO) run ./test/demo -bin-dir $(BIN)

clean:
	rm -rf $(BIN)

# ---------------------------------------------------------------------------
# Images: docker-archive tarballs written by test/image (go-containerregistry),
# no Docker engine and no registry. The same sources give the same digest:
# file times are SOURCE_DATE_EPOCH (the last commit's time), owners 0:0.

IMAGE_NAME ?= localhost/weft
IMAGE_TAG  ?= $(VERSION)
IMAGE_TAR  ?= $(BIN)/weft-image.tar
BUSYBOX    ?= /bin/busybox
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

# portmap comes from the containernetworking/plugins version in go.mod (the
# one e2e tests), stamped with that version.
PORTMAP_PKG     := github.com/containernetworking/plugins/plugins/meta/portmap
PORTMAP_VERSION := $(shell awk '$$1 == "github.com/containernetworking/plugins" { print $$2; exit }' go.mod)
PORTMAP_LDFLAGS := -s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$(PORTMAP_VERSION)

IMAGE_FLAGS = -created $(SOURCE_DATE_EPOCH)

image: build deps-busybox
	$(GO) build -trimpath -ldflags '$(PORTMAP_LDFLAGS)' -o $(BIN)/portmap $(PORTMAP_PKG)
	$(GO) run ./test/image weft $(IMAGE_FLAGS) -o $(IMAGE_TAR) -name $(IMAGE_NAME):$(IMAGE_TAG) \
		-weftd $(BIN)/weftd -weft $(BIN)/weft -portmap $(BIN)/portmap -busybox $(BUSYBOX)

deps-busybox:
	@dpkg-query -W -f='$${Status}' busybox-static 2>/dev/null | grep -q ' installed$$' || $(MAKE) --no-print-directory deps

# ---------------------------------------------------------------------------
# Kubernetes for the kube test tier: kubelet, the control plane, kube-proxy,
# kubectl, containerd, crictl and CoreDNS, built from the Go module proxy
# through the modules under test/kube/tools (one per upstream, so each builds
# with exactly the dependencies it was released with and the main go.mod stays
# free of them). The binaries go to a cache directory named by the versions,
# outside the repository, so every clone on the machine shares them; a binary
# already there is never rebuilt. The tier finds them through WEFT_KUBE_BIN
# (exported to every recipe, `make test` included) or `make -s kube-cache-dir`.

KUBE_TOOLS := test/kube/tools
modver = $(shell awk '$$1 == "$(2)" { print $$2; exit }' $(KUBE_TOOLS)/$(1)/go.mod)
KUBE_VERSION       := $(call modver,kubernetes,k8s.io/kubernetes)
CONTAINERD_VERSION := $(call modver,containerd,github.com/containerd/containerd/v2)
CRICTL_VERSION     := $(call modver,crictl,sigs.k8s.io/cri-tools)
COREDNS_VERSION    := $(call modver,coredns,github.com/coredns/coredns)

KUBE_CACHE ?= $(or $(WEFT_KUBE_BIN),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/weft/kube-$(KUBE_VERSION)-containerd-$(CONTAINERD_VERSION)-crictl-$(CRICTL_VERSION)-coredns-$(COREDNS_VERSION))
export WEFT_KUBE_BIN := $(KUBE_CACHE)

KUBE_CMDS       := kubelet kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl
CONTAINERD_CMDS := containerd containerd-shim-runc-v2 ctr
KUBE_ALL        := $(KUBE_CMDS) $(CONTAINERD_CMDS) crictl coredns

kube_minor  = $(word $(1),$(subst ., ,$(patsubst v%,%,$(KUBE_VERSION))))
KUBE_LDFLAGS := -s -w \
	-X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/component-base/version.gitMajor=$(call kube_minor,1) \
	-X k8s.io/component-base/version.gitMinor=$(call kube_minor,2) \
	-X k8s.io/component-base/version.gitTreeState=clean \
	-X k8s.io/client-go/pkg/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/client-go/pkg/version.gitMajor=$(call kube_minor,1) \
	-X k8s.io/client-go/pkg/version.gitMinor=$(call kube_minor,2)
CONTAINERD_LDFLAGS := -s -w -X github.com/containerd/containerd/v2/version.Version=$(CONTAINERD_VERSION)
CONTAINERD_TAGS    := no_btrfs no_devmapper no_zfs
CRICTL_LDFLAGS     := -s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$(CRICTL_VERSION)
COREDNS_LDFLAGS    := -s -w -X github.com/coredns/coredns/coremain.GitCommit=$(COREDNS_VERSION)

# kube_build builds package $(2) of the tools module $(1) into $@ with the
# flags $(3): under a temporary name first, so an interrupted build never
# leaves a binary that looks complete.
kube_build = cd $(KUBE_TOOLS)/$(1) && $(GO) build -trimpath $(3) -o $@.tmp$$$$ $(2) && mv -f $@.tmp$$$$ $@

kube-bins: $(addprefix $(KUBE_CACHE)/,$(KUBE_ALL))
	@echo "kube-bins: $(KUBE_CACHE)"

kube-cache-dir:
	@echo $(KUBE_CACHE)

$(addprefix $(KUBE_CACHE)/,$(KUBE_CMDS)):
	@mkdir -p $(@D)
	$(call kube_build,kubernetes,k8s.io/kubernetes/cmd/$(@F),-ldflags '$(KUBE_LDFLAGS)')

$(addprefix $(KUBE_CACHE)/,$(CONTAINERD_CMDS)):
	@mkdir -p $(@D)
	$(call kube_build,containerd,github.com/containerd/containerd/v2/cmd/$(@F),-tags '$(CONTAINERD_TAGS)' -ldflags '$(CONTAINERD_LDFLAGS)')

$(KUBE_CACHE)/crictl:
	@mkdir -p $(@D)
	$(call kube_build,crictl,sigs.k8s.io/cri-tools/cmd/crictl,-ldflags '$(CRICTL_LDFLAGS)')

$(KUBE_CACHE)/coredns:
	@mkdir -p $(@D)
	$(call kube_build,coredns,github.com/coredns/coredns,-ldflags '$(COREDNS_LDFLAGS)')

# The kube test tier's other images, tagged like the weft image (CoreDNS by
# its version): the pod sandbox (test/kube/pause), the test client and server
# (test/kube/testpod, with a busybox shell) and CoreDNS, from the binary
# `make kube-bins` builds.
PAUSE_IMAGE   ?= localhost/pause:$(IMAGE_TAG)
TESTPOD_IMAGE ?= localhost/weft-testpod:$(IMAGE_TAG)
COREDNS_IMAGE ?= localhost/coredns:$(COREDNS_VERSION)

kube-images: $(KUBE_CACHE)/coredns deps-busybox
	$(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/pause ./test/kube/pause
	$(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/testpod ./test/kube/testpod
	$(GO) run ./test/image pause $(IMAGE_FLAGS) -o $(BIN)/pause-image.tar -name $(PAUSE_IMAGE) -pause $(BIN)/pause
	$(GO) run ./test/image testpod $(IMAGE_FLAGS) -o $(BIN)/weft-testpod-image.tar -name $(TESTPOD_IMAGE) \
		-testpod $(BIN)/testpod -busybox $(BUSYBOX)
	$(GO) run ./test/image coredns $(IMAGE_FLAGS) -o $(BIN)/coredns-image.tar -name $(COREDNS_IMAGE) -coredns $(KUBE_CACHE)/coredns

# The kube test tier (test/kube) alone, verbose: a two-node Kubernetes cluster
# in namespaces with weft installed from manifests/weft.yaml by kubectl
# apply -k, the ten checks of test/kube/doc.go. `make test` runs it too.
test-kube: deps kube-bins image
	WEFT_IMAGE=$(abspath $(IMAGE_TAR)) $(GO) test -count=1 -v -timeout 15m ./test/kube
