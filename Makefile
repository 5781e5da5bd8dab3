# hedge - top-level entry points. `make test` and `make run` do all the set-up
# on a fresh Debian 12 machine as root: missing packages, configure, build.
BUILD      ?= build
ASAN_BUILD ?= build-asan
ANALYZE_BUILD ?= build-analyze
PYTHON     ?= /usr/bin/python3
PYTEST     ?= $(PYTHON) -m pytest
PYTEST_ARGS ?=

.PHONY: all deps build asan-build test unit pytest asan-test test-quick run bench bench-vm bench-pull bench-oci bench-fleet clean fuzz guest-kernel \
	install deb package-test oci-conformance oci-conformance-ci analyze format format-check

all: build

deps:
	@./scripts/install-deps

$(BUILD)/build.ninja:
	meson setup $(BUILD) >/dev/null

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug >/dev/null

build: deps $(BUILD)/build.ninja
	@ninja -C $(BUILD) >/dev/null || ninja -C $(BUILD)

asan-build: deps $(ASAN_BUILD)/build.ninja
	@ninja -C $(ASAN_BUILD) >/dev/null || ninja -C $(ASAN_BUILD)

unit: build
	meson test -C $(BUILD) --suite unit --print-errorlogs

pytest: build
	HEDGE_BUILD=$(abspath $(BUILD)) $(PYTEST) -q tests $(PYTEST_ARGS)

# The whole suite once more against the ASan+UBSan build: any report fails the run.
asan-test: asan-build
	meson test -C $(ASAN_BUILD) --suite unit --print-errorlogs
	HEDGE_BUILD=$(abspath $(ASAN_BUILD)) HEDGE_SANITIZED=1 $(PYTEST) -q tests $(PYTEST_ARGS)

# Unit tests, then the suite against the plain and the ASan+UBSan build side by side (scripts/test-all).
test: build asan-build
	PYTEST="$(PYTEST)" ./scripts/test-all $(BUILD) $(ASAN_BUILD) $(PYTEST_ARGS)

test-quick: unit pytest

# The OCI runtime conformance suite (opencontainers/runtime-tools validation, built offline), hedge-oci side
# by side with runc: lists every check runc passes and hedge-oci does not (OCI_TESTS: a subset; default all,
# about 10 minutes). CI runs a slice of it (oci-conformance-ci below); docs/oci.md has the latest results.
# ../shared from the main checkout; ../../shared from a worktree under wt/
OCI_CONFORMANCE ?= $(firstword $(wildcard ../shared/tools/oci-conformance/run ../../shared/tools/oci-conformance/run) ../shared/tools/oci-conformance/run)
OCI_TESTS ?=
oci-conformance: build
	@command -v go >/dev/null || (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends golang-go >/dev/null)
	$(OCI_CONFORMANCE) --vs /usr/sbin/runc $(BUILD)/hedge-oci $(OCI_TESTS)

# A bounded slice (about 2 minutes) of the same, in CI: the programs hedge-oci passes today, failing on any
# check runc passes and hedge-oci does not; a loud SKIPPED when the tool or Go is absent (scripts/oci-conformance-ci).
oci-conformance-ci: build
	BUILD=$(BUILD) ./scripts/oci-conformance-ci

# The VM guest kernel (Debian's cloud kernel, unpacked, not installed) in the one place hedge reads it:
# $HEDGE_VM_KERNEL_DIR, else <state>/vm/kernel (/var/lib/hedge/vm/kernel), as `hedge vm kernel fetch` does.
# (The tests and bench keep their own copy in $(BUILD)/guest-kernel.)
guest-kernel: build
	$(BUILD)/hedge vm kernel fetch

# The demo: one workload under each isolation level, then the edge node: hedged
# in the foreground with its embedded defaults and an uplink to a local "cloud"
# broker, a sensor, a filter function, the cloud cut and restored (Ctrl-C ends it).
run: build
	./scripts/demo $(BUILD)
	./scripts/demo-edge $(BUILD)

bench: build
	./bench/start
	./bench/daemon

# VM start: cold, template restore, hedged with and without the warm pool, a bare QEMU; memory of clones.
bench-vm: build
	./bench/vm-start

# hedge image pull beside skopeo copy and podman pull (a local docker-registry; see docs/images.md).
bench-pull: build
	./bench/pull 5

# hedge-oci beside runc as the OCI runtime: bare lifecycle, ctr run (a private containerd), podman run (docs/oci.md).
bench-oci: build
	./bench/oci --runs 10

# 50 hedged nodes and one mosquitto: time to converge to desired documents, and after a broker restart (docs/fleet.md).
bench-fleet: build
	./bench/fleet --nodes 50

# Every libFuzzer target for a bounded time (FUZZ_SECONDS per target); any crash fails.
FUZZ_SECONDS ?= 60
fuzz: build
	./scripts/fuzz-mqtt $(FUZZ_SECONDS)
	./scripts/fuzz-image $(FUZZ_SECONDS)
	./scripts/fuzz-mqtt-client $(FUZZ_SECONDS)
	./scripts/fuzz-mqtt-topic $(FUZZ_SECONDS)
	./scripts/fuzz-mqtt-ws $(FUZZ_SECONDS)

# Install: binaries, helpers, /etc/hedge/hedged.json (kept when it exists), man pages, bash completion,
# the systemd unit, docs (docs/install.md lists them). A build dir of its own, configured for PREFIX
# (hedge looks for its helpers in PREFIX/libexec/hedge); DESTDIR stages the tree.
PREFIX        ?= /usr/local
SYSCONFDIR    ?= /etc
INSTALL_BUILD ?= build-install
DESTDIR       ?=
install: deps
	@if [ -f $(INSTALL_BUILD)/build.ninja ]; then \
		meson configure $(INSTALL_BUILD) --prefix=$(PREFIX) --sysconfdir=$(SYSCONFDIR) >/dev/null; \
	else \
		meson setup $(INSTALL_BUILD) --prefix=$(PREFIX) --sysconfdir=$(SYSCONFDIR) --localstatedir=/var >/dev/null; \
	fi
	@ninja -C $(INSTALL_BUILD) >/dev/null || ninja -C $(INSTALL_BUILD)
	@conf="$(DESTDIR)$(SYSCONFDIR)/hedge/hedged.json"; keep=""; \
	if [ -f "$$conf" ]; then keep=$$(mktemp); cp -p "$$conf" "$$keep"; fi; \
	meson install -C $(INSTALL_BUILD) --no-rebuild --quiet $(if $(DESTDIR),--destdir "$(DESTDIR)") && \
	if [ -n "$$keep" ]; then mv "$$keep" "$$conf"; echo "kept your $$conf"; fi
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && ! getent group hedge >/dev/null; then \
		groupadd --system hedge && echo "created the system group hedge (the API socket's group)"; \
	fi

# The Debian package (debian/, debhelper; dpkg-buildpackage -b -us -uc on a copy of the tree):
# build-deb/hedge_VERSION_ARCH.deb, lintian clean of errors.
deb: deps
	./scripts/build-deb build-deb

# The package installed into a clean Debian 12 root (debootstrap), hedge and hedged run there.
package-test: deps
	./scripts/package-test

# clang's static analyzer over everything the build compiles: zero findings or it fails.
analyze: deps
	./scripts/analyze $(ANALYZE_BUILD)

# The C sources .clang-format covers. format-check names the files that differ; format rewrites them.
FORMAT_FILES = $(shell find src tests/unit fuzz -name '*.[ch]' | sort) $(wildcard bench/*.c)

format-check: deps
	@bad=0; for f in $(FORMAT_FILES); do \
		clang-format --style=file "$$f" | cmp -s "$$f" - || { echo "$$f"; bad=1; }; \
	done; \
	if [ $$bad = 1 ]; then echo "format-check: the files above differ from .clang-format (make format)" >&2; exit 1; fi

format: deps
	clang-format -i --style=file $(FORMAT_FILES)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(INSTALL_BUILD) $(ANALYZE_BUILD) build-fuzz
