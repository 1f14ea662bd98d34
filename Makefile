# imgfs: `make run` builds and mounts the default store; `make test` runs every test.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
export PATH := $(PATH):/usr/local/go/bin
# Gzip spans are decoded with ISA-L (libisal, through cgo); without the tag, as plain `go
# build` does, imgfs is pure Go and its exports are slower. The tests' own builds of the
# daemon inherit the tag from here.
export GOFLAGS := -tags=isal

.PHONY: build run test deps lint fuzz clean

build:
	scripts/install-deps.sh build
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/imgfs ./cmd/imgfs

# run builds imgfs, puts the sample busybox image in the default store and mounts the store
# at $(MNT) (left alone if imgfs already serves there; a stale mount is cleaned up).
MNT ?= /mnt/images
run: build
	scripts/sample-busybox.sh
	@mkdir -p $(MNT)
	@if [ "$$(findmnt -n -o FSTYPE --mountpoint $(MNT) 2>/dev/null)" = fuse.imgfs ] && ls $(MNT) >/dev/null 2>&1; then \
	  echo "imgfs: already mounted at $(MNT)"; \
	else \
	  bin/imgfs mount $(MNT); \
	fi
	@echo "Try:"
	@echo "  ls $(MNT)/busybox/latest/rootfs/bin | head"
	@echo "  ls $(MNT)/busybox/latest/layers/"
	@echo "  getfattr -d $(MNT)/busybox/latest/layers/0"
	@echo "  cat $(MNT)/busybox/latest/config.json"
	@echo "  bin/imgfs umount $(MNT)"

deps:
	scripts/install-deps.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Every test; the packages with concurrency under the race detector (but for the one-goroutine
# comparison of ISA-L's and our inflater's indexes, minutes long there), and the mount, pull
# and push tests that run concurrently again with imgfs built with -race.
test: deps lint
	$(GO) test -count=1 ./...
	GOFLAGS= $(GO) test -count=1 -short ./layerindex/...
	$(GO) test -count=1 -race -short -skip '^TestISALBuildMatchesInflater$$' ./layerindex/... ./store/... ./export/... ./registry/... ./internal/par/...
	IMGFS_RACE=1 $(GO) test -count=1 -run 'TestExportReads|TestReads|TestRootfs|TestStoreChanges|TestPull|TestPush' ./tests/

# Fuzz each parser for FUZZTIME (go test -fuzz runs one target at a time).
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./layerindex/internal/inflate -run '^$$' -fuzz '^FuzzInflate$$' -fuzztime $(FUZZTIME)
	$(GO) test ./layerindex/internal/inflate -run '^$$' -fuzz '^FuzzGzip$$' -fuzztime $(FUZZTIME)
	$(GO) test ./layerindex/internal/inflate -run '^$$' -fuzz '^FuzzResume$$' -fuzztime $(FUZZTIME)
	$(GO) test ./layerindex -run '^$$' -fuzz '^FuzzUnmarshalIndex$$' -fuzztime $(FUZZTIME)
	$(GO) test ./layerindex -run '^$$' -fuzz '^FuzzBuild$$' -fuzztime $(FUZZTIME)
	$(GO) test ./layerindex -run '^$$' -fuzz '^FuzzISALBuild$$' -fuzztime $(FUZZTIME)
	$(GO) test ./registry -run '^$$' -fuzz '^FuzzSharedIndexParsing$$' -fuzztime $(FUZZTIME)
	$(GO) test ./layerindex -run '^$$' -fuzz '^FuzzCheckHeader$$' -fuzztime $(FUZZTIME)

clean:
	rm -rf bin
