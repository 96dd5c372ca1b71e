# strata: see README.md. Every target that needs packages installs them.
# sudo resets PATH, so fall back to the standard Go install location.
GO        ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN       := bin
GOFLAGS   ?=
PKGS      := ./...
# Debian packages the tests and the benchmark use.
TEST_DEBS := fuse3 attr fuse-overlayfs git tar gcc skopeo umoci busybox-static debootstrap podman buildah runc containerd docker-registry apache2-utils

# install puts the binaries, the manual pages and the shell completions
# under $(DESTDIR)$(PREFIX).
PREFIX    ?= /usr/local
DESTDIR   ?=
MANDIR    := $(BIN)/man

.PHONY: all build test test-short demo bench bench-registry bench-build lint fuzz deps clean man install

all: build

build:
	$(GO) build $(GOFLAGS) -o $(BIN)/ ./cmd/...

# deps installs what the tests need on Debian (as root); elsewhere it says
# what is missing.
deps:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "missing Debian packages:$$missing (run 'sudo make deps')"; \
		fi; \
	fi
	$(GO) mod download

# test runs every test with the race detector; the ones that mount need
# root and /dev/fuse and say so when skipped.
test: deps lint
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

test-short:
	$(GO) test -short -count=1 $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

demo: deps build
	./scripts/demo.sh $(BIN)

bench: deps build
	$(GO) run ./bench -strata $(BIN)/strata-fuse $(BENCHFLAGS)
	$(GO) run ./bench/registry -strata $(BIN)/strata
	$(GO) run ./bench/build -strata $(BIN)/strata

# bench-registry times pull and push alone: strata beside skopeo and podman.
bench-registry: deps build
	$(GO) run ./bench/registry -strata $(BIN)/strata

# bench-build times strata build beside buildah bud: cold, cached, and
# after one copied file changed.
bench-build: deps build
	$(GO) run ./bench/build -strata $(BIN)/strata

# fuzz runs every fuzzer for a short while. Minimizing is capped: by
# default it may take a minute per new input, all of a short run.
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
			echo "fuzz $$pkg $$f"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s $$pkg || exit 1; \
		done; \
	done

# man writes the manual pages, from the commands' help, into $(MANDIR).
man: build
	rm -rf $(MANDIR)
	$(BIN)/strata man $(MANDIR)

install: build man
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions \
		$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	for f in $(BIN)/*; do \
		if [ -f "$$f" ] && [ -x "$$f" ]; then install -m 0755 "$$f" $(DESTDIR)$(PREFIX)/bin/ || exit 1; fi; \
	done
	install -m 0644 $(MANDIR)/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	$(BIN)/strata completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/strata
	$(BIN)/strata completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_strata
	$(BIN)/strata completion fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/strata.fish

clean:
	rm -rf $(BIN)
