# uffdgate — see README.md.
#   make run     the main job: uffdgate with the embedded default policy on this host
#   make test    every test, VM tests included (what .ci/run runs)
#   make demo    the gate enforcing on a real stock kernel, in a VM
GO ?= go
export CGO_ENABLED ?= 0

.PHONY: build run test demo bench deps kernels generate vet

build:
	$(GO) build -trimpath -o uffdgate ./cmd/uffdgate

# Enforces where the kernel runs BPF LSM programs; elsewhere (this development
# machine's kernel refuses them) it says why and reports with the audit backend.
run: build
	./uffdgate run --accept-audit-only

# Debian kernels and QEMU for the VM tests (internal/vmtest).
kernels:
	bash scripts/fetch-kernels.sh

# Everything the tests need beyond Go: QEMU and the kernels.
deps: kernels
	bash scripts/install-test-deps.sh

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...

test: deps vet
	$(GO) test -count=1 -timeout 60m ./...

demo: kernels
	$(GO) test -count=1 -run '^TestDemo$$' -v ./e2e

# The cost figures of BENCHMARKS.md: this machine's CPU (seccomp, audit backend)
# and a VM boot (all variants, LSM gate included), each interleaved in one run.
bench: deps
	$(GO) test -count=1 -run '^$$' -bench HostSyscallTax -benchtime 1x -v ./e2e
	UFFDGATE_BENCH=full $(GO) test -count=1 -timeout 60m -run '^TestBench$$' -v ./e2e

# Regenerates the committed BPF objects (internal/gate/*_bpfel.*).
generate:
	bash scripts/install-test-deps.sh generate
	$(GO) generate ./internal/gate
