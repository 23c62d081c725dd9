# corogate — one Makefile for the runtime, the daemon, the load generator and the tests.
#
#   make            install missing Debian packages, build everything under build/
#   make run        build, start the echo backend and corogate on conf/corogate.ini
#   make test       unit + integration tests, then the same suites under ASan+UBSan
#   make check-fresh the README's test command in a bare Debian 12 (debootstrap) root
#   make bench-coro coroutine runtime micro-benchmarks (JSON lines)
#   make capacity   the most connections the open-files limit allows, through corogate
#   make capacity-1m  a million WebSocket connections held (loadgen/capacity-1m.sh; root)
#   make device-bundle  binaries + their libraries in .bundle/ for a machine without packages
#   make bench      loadgen against the backend, corogate, HAProxy, nginx: one table
#   make bench-bpf  echo msgs/s through one worker with the eBPF probes off/tp_btf/raw_tp
#   make bench-tls  TLS libraries compared: memory per idle connection, handshakes/s, AES-GCM
#   make bench-tls-rekey  the record layer's cost of keying a cipher context per record
#   make bench-accesslog  new connections/s with the connection log on (stderr, json) vs off
#   make bench-uring  the echo backend's CPU per message, epoll vs io_uring (serve --io)
#   make bench-sockmap whole-machine CPU per message: a read/write relay vs the kernel's
#                   sk_skb redirect vs corogate (bench/floor_relay.c)
#   make bench-insn user-space instructions per connection and per message (callgrind),
#                   corogate vs HAProxy vs nginx: counted, so it holds on a busy machine
#   make V=1        show full commands
#   make build/coro/sched.o   build one object

.DELETE_ON_ERROR:
.SUFFIXES:

SAN     ?=
ifeq ($(SAN),1)
BUILD   ?= build/asan
else
BUILD   ?= build
endif

CC      ?= cc
ARCH    := $(shell uname -m)
VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)

ifeq ($(V),1)
Q :=
else
Q := @
endif

# The context switch: hand-written assembly where we have it, ucontext elsewhere
# (or when asked with CORO_SWITCH=ucontext).
ifeq ($(CORO_SWITCH),)
ifneq ($(filter $(ARCH),x86_64 aarch64),)
CORO_SWITCH := asm
else
CORO_SWITCH := ucontext
endif
endif

PKGS     := libuv inih check libbpf
CPPFLAGS := -D_GNU_SOURCE -DCG_VERSION='"$(VERSION)"' -I. -Igateway -Icoro -I$(BUILD) \
            -I/usr/share/include/llhttp
CFLAGS   := -std=gnu11 -O2 -g -pthread -fno-omit-frame-pointer -fstack-clash-protection \
            -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -MMD -MP
LDLIBS   := -luv -linih -lwslay -lssl -lcrypto -lbpf -lelf -lz -lm -pthread
# liburing: the loadgen's `serve --io io_uring` experiment only (loadgen/serve-uring.c),
# so the loadgen and the test binary that links its objects; the daemon does not.
LG_LDLIBS:= -luring
ifeq ($(CORO_SWITCH),ucontext)
CPPFLAGS += -DCORO_USE_UCONTEXT
endif
ifeq ($(SAN),1)
CFLAGS   += -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=address,undefined
CPPFLAGS += -DCORO_SANITIZE_ADDRESS
endif
# FUZZ=1 (with SAN=1 and CC=clang; `make fuzz` sets them): every object instrumented for
# libFuzzer's coverage, so the fuzz targets see into the code they drive.
ifeq ($(FUZZ),1)
CFLAGS   += -fsanitize=fuzzer-no-link
endif

# ---------------------------------------------------------------- sources
CORO_SRC  := $(wildcard coro/*.c)
ifeq ($(CORO_SWITCH),asm)
CORO_ASM  := coro/switch_$(ARCH).S
endif
# gateway/ has one folder per concern (core, proto, guard, observe, config); common/ holds
# what the daemon and the loadgen share.
GW_SRC    := $(wildcard gateway/*/*.c)
COMMON_SRC:= $(wildcard common/*.c)
LG_SRC    := $(filter-out loadgen/main.c,$(wildcard loadgen/*.c))
TEST_SRC  := $(wildcard tests/*.c) $(wildcard tests/*_$(ARCH).S)
LLHTTP_SRC:= $(wildcard /usr/share/llhttp/*.c)

obj = $(patsubst %.c,$(BUILD)/%.o,$(patsubst %.S,$(BUILD)/%.o,$(1)))

CORO_OBJ  := $(call obj,$(CORO_SRC) $(CORO_ASM))
GW_OBJ    := $(call obj,$(GW_SRC))
COMMON_OBJ:= $(call obj,$(COMMON_SRC))
LG_OBJ    := $(call obj,$(LG_SRC))
TEST_OBJ  := $(call obj,$(TEST_SRC))
LLHTTP_OBJ:= $(patsubst /usr/share/llhttp/%.c,$(BUILD)/llhttp/%.o,$(LLHTTP_SRC))

LIBCORO   := $(BUILD)/libcoro.a
DAEMON    := $(BUILD)/corogate
LOADGEN   := $(BUILD)/corogate-loadgen
TESTS     := $(BUILD)/run-tests
BENCHCORO := $(BUILD)/bench-coro
BENCHSCHED:= $(BUILD)/bench-schedlat
FLOOR     := $(BUILD)/bench/floor-relay

.PHONY: all deps build run test check check-browser check-fresh fuzz fuzz-bins fuzz-replay bench bench-coro bench-bpf bench-deps bench-tls bench-tls-rekey bench-accesslog bench-uring bench-sockmap bench-insn tls-deps capacity capacity-1m device-bundle clean
all: deps
	$(Q)$(MAKE) --no-print-directory build

build: $(LIBCORO) $(DAEMON) $(LOADGEN) $(TESTS) $(FLOOR)

# ---------------------------------------------------------------- packages
# Everything the build and the tests need, from Debian 12. Idempotent and quiet when all
# is there; installs with apt-get otherwise (root needed).
DEB_PKGS := gcc make pkg-config libc6-dev libuv1-dev node-llhttp libwslay-dev libinih-dev \
            check systemtap-sdt-dev libbpf-dev bpftool clang libelf-dev zlib1g-dev \
            libboost-context-dev python3 python3-websockets socat iproute2 procps \
            prometheus bpftrace openssl libssl-dev haproxy liburing-dev
deps:
	$(Q)bash scripts/apt-ensure.sh $(DEB_PKGS)

# ---------------------------------------------------------------- rules
$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC     $@")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.S
	@mkdir -p $(@D)
	@$(if $(Q),echo "  AS     $@")
	$(Q)$(CC) $(CPPFLAGS) $(filter-out -fsanitize=%,$(CFLAGS)) -c -o $@ $<

# BPF: bpf/NAME.bpf.c -> $(BUILD)/bpf/NAME.bpf.o -> $(BUILD)/NAME.skel.h, as libbpf-tools
# does. vmlinux.h is dumped from the running kernel's BTF at build time; the object is
# CO-RE, so it loads on other kernels too. clang's system include directories are passed
# explicitly: -target bpf does not search the multiarch ones (asm/types.h).
BPFTOOL    ?= bpftool
BPF_CLANG  ?= clang
VMLINUX_BTF?= /sys/kernel/btf/vmlinux
BPF_ARCH   := $(patsubst x86_64,x86,$(patsubst aarch64,arm64,$(ARCH)))
BPF_SYS_INC = $(shell $(BPF_CLANG) -v -E - </dev/null 2>&1 | \
                sed -n '/<...> search starts here:/,/End of search list./{ s| \(/.*\)|-idirafter \1|p }')
BPF_CFLAGS := -g -O2 -Wall -Werror -target bpf -D__TARGET_ARCH_$(BPF_ARCH)

$(BUILD)/vmlinux.h:
	@mkdir -p $(@D)
	@$(if $(Q),echo "  GEN    $@")
	$(Q)$(BPFTOOL) btf dump file $(VMLINUX_BTF) format c > $@.tmp && mv $@.tmp $@

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c bpf/%.h $(BUILD)/vmlinux.h
	@mkdir -p $(@D)
	@$(if $(Q),echo "  BPF    $@")
	$(Q)$(BPF_CLANG) $(BPF_CFLAGS) -I$(BUILD) -Ibpf $(BPF_SYS_INC) -c $< -o $(@:.bpf.o=.tmp.bpf.o)
	$(Q)$(BPFTOOL) gen object $@ $(@:.bpf.o=.tmp.bpf.o) && rm -f $(@:.bpf.o=.tmp.bpf.o)

$(BUILD)/%.skel.h: $(BUILD)/bpf/%.bpf.o
	@$(if $(Q),echo "  GEN    $@")
	$(Q)$(BPFTOOL) gen skeleton $< name $*_bpf > $@.tmp && mv $@.tmp $@

BPF_OBJ := $(patsubst bpf/%.bpf.c,$(BUILD)/bpf/%.bpf.o,$(wildcard bpf/*.bpf.c))
.SECONDARY: $(BPF_OBJ)
$(BUILD)/gateway/observe/schedlat.o: $(BUILD)/schedlat.skel.h
$(BUILD)/bench/floor_relay.o: $(BUILD)/relay_sockmap.skel.h

# llhttp is compiled from the Debian package's C sources, never copied into the tree.
$(BUILD)/llhttp/%.o: /usr/share/llhttp/%.c
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC     $@")
	$(Q)$(CC) $(CPPFLAGS) -std=gnu11 -O2 -g -fPIC -w $(filter -fsanitize=%,$(CFLAGS)) \
	    -c -o $@ $<

$(LIBCORO): $(CORO_OBJ)
	@$(if $(Q),echo "  AR     $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(DAEMON): $(BUILD)/gateway/main.o $(GW_OBJ) $(COMMON_OBJ) $(LLHTTP_OBJ) $(LIBCORO)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(LDFLAGS) $(CFLAGS) -o $@ $^ $(LDLIBS)

# The loadgen's WebSocket handshakes use common/ (the HTTP upgrade, SHA-1, base64).
$(LOADGEN): $(BUILD)/loadgen/main.o $(LG_OBJ) $(COMMON_OBJ) $(LLHTTP_OBJ) $(LIBCORO)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(LDFLAGS) $(CFLAGS) -o $@ $^ $(LG_LDLIBS) $(LDLIBS)

# Every tests/test_*.c exports `Suite *<name>_suite(void)`; the list is generated so adding a
# suite needs no edit elsewhere.
$(BUILD)/suites.inc: $(wildcard tests/test_*.c)
	@mkdir -p $(@D)
	$(Q)grep -ho '^Suite \*[a-z0-9_]*_suite(void)' $^ /dev/null | \
	    sed 's/^Suite \*\(.*\)_suite(void)/SUITE(\1)/' | sort > $@.tmp && mv $@.tmp $@

$(BUILD)/tests/main.o: $(BUILD)/suites.inc

# The FP-state test changes the rounding mode between divisions: the compiler must not
# move arithmetic across fesetround().
$(BUILD)/tests/test_coro.o: CFLAGS += -frounding-math

$(TESTS): $(TEST_OBJ) $(GW_OBJ) $(COMMON_OBJ) $(LG_OBJ) $(LLHTTP_OBJ) $(LIBCORO)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(LDFLAGS) $(CFLAGS) -o $@ $^ $$(pkg-config --libs check) $(LG_LDLIBS) $(LDLIBS)

# ---------------------------------------------------------------- fuzzing
# tests/fuzz/fuzz_NAME.c: a libFuzzer target over the project's own code (tests/fuzz/fuzz.h),
# built by clang with ASan+UBSan into build/fuzz/. `make fuzz` runs each for FUZZ_S seconds
# from tests/fuzz/corpus/NAME/ (new inputs go to build/fuzz/work/NAME/, crashes to
# build/fuzz/crash-NAME-*); `make fuzz-replay` (part of `make test`) runs every corpus file
# once.
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS  := $(patsubst %,$(BUILD)/fuzz_%,$(FUZZ_NAMES))
FUZZ_S     ?= 60
FUZZ_MAKE   = $(MAKE) --no-print-directory -j$(NPROC) BUILD=build/fuzz CC=clang SAN=1 FUZZ=1

# What each target links: only the code it drives (so the fuzz build compiles little).
FUZZ_DEPS_handshake_request  = $(call obj,common/handshake.c) $(LLHTTP_OBJ)
FUZZ_DEPS_handshake_response = $(FUZZ_DEPS_handshake_request)
FUZZ_DEPS_utf8               = $(call obj,common/utf8.c)
FUZZ_DEPS_route              = $(call obj,gateway/config/route.c)
FUZZ_DEPS_config             = $(call obj,gateway/config/config.c gateway/config/keys.c \
                                 gateway/config/route.c common/parse.c gateway/base/log.c \
                                 gateway/base/cidr.c)
FUZZ_DEPS_lg_reply           = $(call obj,loadgen/lg_msg.c loadgen/lg_ws.c common/utf8.c \
                                 common/handshake.c) $(LLHTTP_OBJ) $(LIBCORO)
FUZZ_DEPS_proxy_proto        = $(call obj,gateway/base/proxy-proto.c)
FUZZ_DEPS_ws_relay           = $(GW_OBJ) $(COMMON_OBJ) $(LLHTTP_OBJ) $(LIBCORO)
FUZZ_DEPS_stats_cmd          = $(FUZZ_DEPS_ws_relay)
FUZZ_DEPS_tls_records        = $(call obj,common/tls.c) $(LIBCORO)

.SECONDEXPANSION:
$(BUILD)/fuzz_%: $(BUILD)/tests/fuzz/fuzz_%.o $$(FUZZ_DEPS_$$*)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(LDFLAGS) $(CFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

fuzz-bins: $(FUZZ_BINS)
.SECONDARY: $(patsubst %,$(BUILD)/tests/fuzz/fuzz_%.o,$(FUZZ_NAMES))

fuzz-replay: deps
	$(Q)$(FUZZ_MAKE) fuzz-bins
	$(Q)./scripts/fuzz.sh replay build/fuzz $(FUZZ_NAMES)

fuzz: deps
	$(Q)$(FUZZ_MAKE) fuzz-bins
	$(Q)./scripts/fuzz.sh run build/fuzz $(FUZZ_S) $(FUZZ_NAMES)

# The runtime's own suites alone: `make check-ucontext` builds them with the ucontext
# fallback (on x86_64 too), so that the switch other architectures use is tested here.
CORO_TEST_OBJ := $(call obj,tests/test_coro.c tests/test_coro_io.c $(wildcard tests/*_$(ARCH).S))

$(BUILD)/coro-tests/suites.inc:
	@mkdir -p $(@D)
	$(Q)printf 'SUITE(coro)\nSUITE(coro_io)\n' > $@

$(BUILD)/coro-tests/main.o: tests/main.c $(BUILD)/coro-tests/suites.inc
	@$(if $(Q),echo "  CC     $@")
	$(Q)$(CC) -I$(BUILD)/coro-tests $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(BUILD)/run-coro-tests: $(BUILD)/coro-tests/main.o $(CORO_TEST_OBJ) $(LIBCORO)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(LDFLAGS) $(CFLAGS) -o $@ $^ $$(pkg-config --libs check) -luv -pthread

$(BENCHCORO): $(BUILD)/bench/bench_coro.o $(LIBCORO)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(LDFLAGS) $(CFLAGS) -o $@ $^ -lboost_context $(LDLIBS)

# ---------------------------------------------------------------- running
run: all
	$(Q)./scripts/run-local.sh $(BUILD)

# The plain suites first, then the same suites built with ASan+UBSan.
# The builds use every CPU (half the time of a serial build on 2 cores); the suites run one
# at a time, as their timing margins assume.
NPROC := $(shell nproc 2>/dev/null || echo 1)

test: deps
	$(Q)$(MAKE) --no-print-directory -j$(NPROC) build
	$(Q)$(MAKE) --no-print-directory -j$(NPROC) SAN=1 build
	$(Q)$(MAKE) --no-print-directory check
	$(Q)$(MAKE) --no-print-directory check-ucontext
	$(Q)$(MAKE) --no-print-directory check-cross
	$(Q)$(MAKE) --no-print-directory SAN=1 check
	$(Q)$(MAKE) --no-print-directory fuzz-replay

# The README's `... && make test` in a debootstrap minbase Debian 12 root made for it, where
# not even make is installed (scripts/check-fresh.sh: mirror from this machine's apt
# sources, a git archive of HEAD, /proc /sys /dev mounted, all undone on exit). debootstrap
# is installed for this target only.
check-fresh:
	$(Q)bash scripts/apt-ensure.sh debootstrap
	$(Q)./scripts/check-fresh.sh

# A real browser through corogate: installs Debian's chromium (about 300 MB, so not a
# dependency of `make test`, where these tests skip with this hint) and runs the browser
# suite (ws://: echo, subprotocol, permessage-deflate, a refused Origin) and the wss://
# test in tls_gw's upstream case.
check-browser: build
	$(Q)bash scripts/apt-ensure.sh chromium
	@echo "  TEST   headless chromium through ws:// (browser suite)"
	$(Q)CG_BUILD=$(BUILD) $(TESTS) browser
	@echo "  TEST   headless chromium through wss://"
	$(Q)CG_BUILD=$(BUILD) CK_RUN_SUITE=tls_gw CK_RUN_CASE=upstream $(TESTS)

# The aarch64 switch, cross-compiled and run under qemu-user on this x86_64 machine (and the
# native switch through the same program).
CROSS_PKGS := gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
check-cross:
	$(Q)bash scripts/apt-ensure.sh $(CROSS_PKGS)
	@mkdir -p build/cross
	@echo "  TEST   switch selftest: aarch64 under qemu, and native"
	$(Q)aarch64-linux-gnu-gcc -std=gnu11 -O2 -static -D_GNU_SOURCE -I. -Icoro -Wall -Wextra \
	    -Werror -o build/cross/switch-aarch64 tests/cross/switch_selftest.c coro/ctx.c \
	    coro/switch_aarch64.S -lm
	$(Q)qemu-aarch64-static build/cross/switch-aarch64
	$(Q)$(CC) -std=gnu11 -O2 -D_GNU_SOURCE -I. -Icoro -Wall -Wextra -Werror \
	    -o build/cross/switch-native tests/cross/switch_selftest.c coro/ctx.c \
	    $(CORO_ASM) -lm
	$(Q)build/cross/switch-native

# The fault suite (tests/test_faults.c) at the counts of issue 20: an 8,000-connection
# reconnect storm, thousands of slowloris clients, 20 reloads... `make test` runs the same
# suite in a short form. Plain build first, then the ASan one.
.PHONY: faults soak
faults: $(TESTS) $(DAEMON) $(LOADGEN)
	@echo "  TEST   faults suite, CG_FAULTS=full"
	$(Q)CG_FAULTS=full CG_BUILD=$(BUILD) $(TESTS) faults

# The ASan+LSan daemon under mixed tcp and websocket traffic with faults injected at random
# for SOAK_S seconds (scripts/soak.sh: SOAK_SEED picks the sequence and is printed).
SOAK_S ?= 300
soak:
	$(Q)$(MAKE) --no-print-directory -j$(NPROC) build
	$(Q)$(MAKE) --no-print-directory -j$(NPROC) SAN=1 build
	$(Q)SOAK_S=$(SOAK_S) bash scripts/soak.sh

check-ucontext: deps
	$(Q)$(MAKE) --no-print-directory -j$(NPROC) CORO_SWITCH=ucontext BUILD=build/uctx \
	    build/uctx/run-coro-tests
	@echo "  TEST   build/uctx/run-coro-tests (ucontext context switch)"
	$(Q)build/uctx/run-coro-tests

check: $(TESTS) $(DAEMON) $(LOADGEN) $(FLOOR)
	@echo "  TEST   $(TESTS)"
	$(Q)CG_BUILD=$(BUILD) ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 $(TESTS)

# The largest connection count the open-files limit allows, through corogate: RSS and CPU
# per connection, accept rate, latency at a fixed rate, the quota (loadgen/capacity.sh;
# CONNECTIONS, RATE, WORKERS... in the environment scale it up).
capacity: $(DAEMON) $(LOADGEN)
	$(Q)BUILD=$(BUILD) ./loadgen/capacity.sh

# A million WebSocket connections held for a minute (loadgen/capacity-1m.sh: its variables
# pass through the environment, e.g. make capacity-1m CONNECTIONS=5000 PEERS=corogate,haproxy).
# With CG_BUNDLE (a `make device-bundle` folder) nothing is installed or built.
ifeq ($(CG_BUNDLE),)
capacity-1m: deps
	$(Q)$(MAKE) --no-print-directory $(DAEMON) $(LOADGEN)
	$(Q)BUILD=$(BUILD) bash loadgen/capacity-1m.sh
else
capacity-1m:
	$(Q)CG_BUNDLE=$(CG_BUNDLE) bash loadgen/capacity-1m.sh
endif

# corogate, the loadgen, haproxy and socat with their non-glibc libraries in .bundle/, for a
# machine with neither Debian's packages nor a network (scripts/device-bundle.sh).
device-bundle: deps
	$(Q)$(MAKE) --no-print-directory $(DAEMON) $(LOADGEN)
	$(Q)BUILD=$(BUILD) bash scripts/device-bundle.sh

# The peers `make bench` compares corogate with; not needed by the build or the tests.
BENCH_DEB_PKGS := haproxy nginx libnginx-mod-stream socat procps
bench-deps:
	$(Q)bash scripts/apt-ensure.sh $(BENCH_DEB_PKGS)

# The loadgen against the backend, corogate, HAProxy and nginx (loadgen/bench.sh; configs
# in loadgen/bench/): one table of medians for TCP and WebSocket.
bench: bench-deps $(DAEMON) $(LOADGEN) $(FLOOR)
	$(Q)BUILD=$(BUILD) ./loadgen/bench.sh

# The connection log's cost: closed-loop new connections/s with access_log = stderr (json,
# to a file) against access_log = off, alternating in one run (loadgen/bench-accesslog.sh).
bench-accesslog: $(DAEMON) $(LOADGEN)
	$(Q)BUILD=$(BUILD) ./loadgen/bench-accesslog.sh

# The echo backend's CPU time per echoed message and msgs/s with --io epoll and --io io_uring,
# alternating, at 1,000 and 100 connections; system calls per message (strace -c)
# (loadgen/bench-uring.sh; docs/bench.md, "io_uring: the echo-backend experiment").
bench-uring: $(LOADGEN)
	$(Q)BUILD=$(BUILD) ./loadgen/bench-uring.sh

# Would the kernel relaying the bytes (sockmap) cost the machine less than a relay that
# reads and writes them? Whole-machine CPU per message, direct / floor / sockmap / corogate
# (loadgen/bench-sockmap.sh; docs/bench.md, "sockmap: the kernel relays the bytes").
bench-sockmap: $(DAEMON) $(LOADGEN) $(FLOOR)
	$(Q)BUILD=$(BUILD) ./loadgen/bench-sockmap.sh

# User-space instructions per proxied connection and per relayed message, each peer under
# callgrind (loadgen/insn.sh; profiles in build/insn-run/).
bench-insn: bench-deps $(DAEMON) $(LOADGEN)
	$(Q)bash scripts/apt-ensure.sh valgrind
	$(Q)BUILD=$(BUILD) ./loadgen/insn.sh

bench-coro: deps
	$(Q)$(MAKE) --no-print-directory $(BENCHCORO)
	$(Q)$(BENCHCORO)

$(BENCHSCHED): $(BUILD)/bench/bench_schedlat.o $(BUILD)/gateway/observe/schedlat.o \
               $(BUILD)/gateway/guard/breaker.o $(BUILD)/gateway/guard/tokenbucket.o \
               $(BUILD)/gateway/base/log.o $(BUILD)/common/rand.o $(LIBCORO)
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(LDFLAGS) $(CFLAGS) -o $@ $^ $(LDLIBS)

# The bench's reference relay: read() and write() and nothing else (bench/floor_relay.c),
# and with --sockmap the kernel's sk_skb redirect; `make bench`'s "floor" peer.
$(FLOOR): $(BUILD)/bench/floor_relay.o
	@$(if $(Q),echo "  LD     $@")
	$(Q)$(CC) $(LDFLAGS) $(CFLAGS) -o $@ $^ -lbpf -lelf -lz -pthread

# BENCH_ARGS: e.g. "-w 1000 -n 4 -c 8 -p 4 -s 64" (see bench/bench_schedlat.c).
bench-bpf: deps
	$(Q)$(MAKE) --no-print-directory $(DAEMON) $(LOADGEN) $(BENCHSCHED)
	$(Q)CG_BUILD=$(BUILD) $(BENCHSCHED) $(BENCH_ARGS)

# The TLS libraries Debian 12 offers, measured against each other (bench/tls_bench.c, one
# binary per library; docs/tls.md). The daemon links OpenSSL (DEB_PKGS); the others are for
# the comparison only.
# mbedTLS 2.28 is left out: Debian's build has no TLS 1.3 (docs/tls.md).
TLS_DEB_PKGS := openssl libssl-dev libwolfssl-dev libgnutls28-dev
TLS_BENCH_LIBS := openssl wolfssl gnutls
TLS_BENCH    := $(patsubst %,$(BUILD)/bench/tls-bench-%,$(TLS_BENCH_LIBS))
tls-deps:
	$(Q)bash scripts/apt-ensure.sh $(TLS_DEB_PKGS)

TLS_BENCH_openssl := -DTLS_OPENSSL -lssl -lcrypto
TLS_BENCH_wolfssl := -DTLS_WOLFSSL -lwolfssl
TLS_BENCH_gnutls  := -DTLS_GNUTLS -lgnutls
$(BUILD)/bench/tls-bench-%: bench/tls_bench.c
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CCLD   $@")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(TLS_BENCH_$*)

bench-tls: tls-deps
	$(Q)$(MAKE) --no-print-directory $(TLS_BENCH)
	$(Q)BUILD=$(BUILD) TLS_LIBS="$(TLS_BENCH_LIBS)" ./scripts/bench-tls.sh

# The record layer keys a per-thread cipher context per record (common/tls.c): its cost.
$(BUILD)/bench/tls-rekey: bench/tls_rekey.c
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CCLD   $@")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< -lcrypto

bench-tls-rekey: $(BUILD)/bench/tls-rekey
	$(Q)$(BUILD)/bench/tls-rekey

# ---------------------------------------------------------------- installing
# `make install DESTDIR=/tmp/x` lays out the tree a package would; install-bin only the
# programs (the Dockerfile's build stage uses it). systemd reads units, sysctl and sysusers
# files from $(PREFIX)/lib/... for PREFIX=/usr and /usr/local alike. The configuration is
# installed only where there is none: an operator's file is never overwritten (the new
# default goes next to it as corogate.ini.dist). It is mode 0644: the daemon runs as the
# unprivileged user corogate and must read it; it holds no secret.
PREFIX      ?= /usr
SBINDIR     ?= $(PREFIX)/sbin
BINDIR      ?= $(PREFIX)/bin
DOCDIR      ?= $(PREFIX)/share/doc/corogate
MANDIR      ?= $(PREFIX)/share/man
SYSCONFDIR  ?= /etc
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSCTLDIR   ?= $(PREFIX)/lib/sysctl.d
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d

.PHONY: install install-bin
install-bin: $(DAEMON) $(LOADGEN)
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR)
	install -m 0755 $(DAEMON) $(DESTDIR)$(SBINDIR)/corogate
	install -m 0755 $(LOADGEN) $(DESTDIR)$(BINDIR)/corogate-loadgen

install: install-bin
	install -d $(DESTDIR)$(SYSCONFDIR)/corogate $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(SYSCTLDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(DOCDIR)/docs \
	    $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man1
	sed 's|^stats_socket = .*|stats_socket = /run/corogate/stats.sock|' \
	    conf/corogate.ini > $(DESTDIR)$(SYSCONFDIR)/corogate/corogate.ini.dist
	chmod 0644 $(DESTDIR)$(SYSCONFDIR)/corogate/corogate.ini.dist
	test -e $(DESTDIR)$(SYSCONFDIR)/corogate/corogate.ini || \
	    cp -p $(DESTDIR)$(SYSCONFDIR)/corogate/corogate.ini.dist \
	        $(DESTDIR)$(SYSCONFDIR)/corogate/corogate.ini
	sed -e 's|/usr/sbin/corogate|$(SBINDIR)/corogate|g' \
	    -e 's|/etc/corogate/|$(SYSCONFDIR)/corogate/|g' \
	    systemd/corogate.service > $(DESTDIR)$(UNITDIR)/corogate.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/corogate.service
	install -m 0644 systemd/99-corogate.conf $(DESTDIR)$(SYSCTLDIR)/99-corogate.conf
	install -m 0644 systemd/corogate.sysusers $(DESTDIR)$(SYSUSERSDIR)/corogate.conf
	install -m 0644 man/corogate.8 $(DESTDIR)$(MANDIR)/man8/corogate.8
	install -m 0644 man/corogate-loadgen.1 $(DESTDIR)$(MANDIR)/man1/corogate-loadgen.1
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -m 0644 docs/*.md $(DESTDIR)$(DOCDIR)/docs/

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
