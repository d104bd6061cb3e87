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
DEB_CMDS := ip:iproute2 ping:iputils-ping etcd:etcd-server etcdctl:etcd-client \
            iptables:iptables nft:nftables iperf3:iperf3 mkfs.ext4:e2fsprogs

.PHONY: all build test test-unit lint bench demo deps clean

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

# Unit, privileged (root) and end-to-end tests. Run as root for the full suite.
test: deps lint
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 12m $(RACE_PKGS)
	$(GO) test -count=1 -timeout 12m $(filter-out $(RACE_PKGS:./%=$(MODULE)/%),$(shell $(GO) list ./...))

test-unit:
	$(GO) test -short -count=1 ./...

lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...

bench: deps build
	$(GO) run ./test/bench $(if $(BENCH_JSON),-json $(BENCH_JSON))

demo: deps build
	$(GO) run ./test/demo -bin-dir $(BIN)

clean:
	rm -rf $(BIN)
