# image-replication-operator — `make help` lists the targets.
SHELL := /bin/bash
HELM ?= $(CURDIR)/.tools/bin/helm
BIN := target/debug/image-replication-operator
RELEASE_NS ?= image-replication-system
CHART := charts/image-replication-operator
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
IMAGE ?= image-replication-operator:$(VERSION)
IMAGE_DIR := target/image
IMAGE_SOURCE ?= https://github.com/imageops/image-replication-operator

.PHONY: help build test lint fmt crds render chart tools run image image-push docker-image demo bench

help: ## Show the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

build: ## Build the operator binary
	cargo build

tools: ## Install what the tests need: helm (.tools/bin), envtest's etcd and kube-apiserver (.tools/envtest), moto, the clouds' SDKs (.tools/sdk), and Debian's registry, skopeo, glance-api, keystone, uwsgi, qemu-utils, lua5.1
	./hack/install-tools.sh
	./hack/install-envtest.sh

test: tools ## Run every test (unit, CEL, fake and real API server, controllers, chart, the image of the test build): hack/test.sh, the harnesses side by side
	HELM=$(HELM) ./hack/test.sh

lint: ## cargo fmt --check and clippy with warnings as errors
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt

crds: build ## Regenerate crds/ and the chart's CRDs from src/api
	$(BIN) crdgen --out-dir crds --out-dir $(CHART)/files/crds

render: tools ## Render deploy/install.yaml from the chart
	$(HELM) template image-replication-operator $(CHART) --namespace $(RELEASE_NS) --set createNamespace=true > deploy/install.yaml

chart: tools ## helm lint the chart
	$(HELM) lint --strict $(CHART)

run: build ## Run the operator against the current kubeconfig
	$(BIN) run --http-addr 127.0.0.1:8080

image: ## Build the OCI image without a container engine: target/image/oci (layout) and target/image/image-replication-operator-VERSION.tar
	cargo build --release --locked
	python3 hack/image.py --binary target/release/image-replication-operator --out $(IMAGE_DIR)/oci \
	  --archive $(IMAGE_DIR)/image-replication-operator-$(VERSION).tar --version $(VERSION) \
	  --revision "$$(git rev-parse HEAD 2>/dev/null || echo unknown)" --source $(IMAGE_SOURCE)

image-push: image ## Push the image: make image-push IMAGE=registry.example.com/team/image-replication-operator:0.1.0
	skopeo copy --all oci:$(IMAGE_DIR)/oci:$(VERSION) docker://$(IMAGE)

docker-image: ## Build the equivalent image from the Dockerfile (needs a Docker engine)
	docker build --build-arg REVISION="$$(git rev-parse HEAD)" --build-arg SOURCE=$(IMAGE_SOURCE) -t $(IMAGE) .

demo: ## Replicate a multi-arch image between two loopback registries and compare digests
	./hack/demo.sh

bench: ## Measure against skopeo and the registries' limits on loopback registries, and the controller at scale; writes docs/BENCHMARKS.md (BENCH_REPOS, BENCH_BIG_BYTES, BENCH_BIG_RUNS, BENCH_LAYERED_RUNS, BENCH_NOOP_TAGS, BENCH_SCALE_IRS, BENCH_SCALE_RIS)
	./hack/bench.sh
