# SPDX-License-Identifier: MIT
# portbroker: plain make. `make` builds into $(BUILD)/, `make check` sets up a
# fresh Debian machine's packages, builds, runs every test, then runs them all
# again under SANITIZE=address,undefined. See README.md.

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/sbin
# Debian's multiarch directory: LIBDIR=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR     ?= $(PREFIX)/share/man
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
# brokerd reads $(SYSCONFDIR)/portbroker/brokerd.conf: /etc for PREFIX=/usr
# (and the package), else PREFIX/etc.
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
DESTDIR    ?=

VERSION    := 0.1.0
SOVERSION  := 0
BUILD      ?= build
SANITIZE   ?=
PYTEST     ?= /usr/bin/python3 -m pytest

CC         ?= cc
PKG_CONFIG ?= pkg-config
DEPS_CFLAGS := $(shell $(PKG_CONFIG) --cflags libsystemd sqlite3 libbpf 2>/dev/null)
DEPS_LIBS   := $(shell $(PKG_CONFIG) --libs libsystemd sqlite3 libbpf 2>/dev/null)
# The bind guard's BPF programs: clang's BPF target, the UAPI headers of this
# machine's multiarch directory (asm/types.h), libbpf's bpf_helpers.h.
CLANG      ?= clang
MULTIARCH  := $(shell $(CC) -print-multiarch 2>/dev/null)

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wsign-compare -Wpointer-arith -Wformat=2 -Wundef -Wno-unused-parameter
HARDEN   := -fstack-protector-strong -fPIC -D_FORTIFY_SOURCE=2
OPT      ?= -O2 -g
CFLAGS   ?=
PRELOAD_PATH := $(LIBDIR)/portbroker/libportbroker-preload.so
CPPFLAGS += -Iproto -Icommon -Iclient/lib -D_GNU_SOURCE -DPB_VERSION='"$(VERSION)"'
ALL_CFLAGS = -std=gnu11 $(OPT) $(WARN) $(HARDEN) $(DEPS_CFLAGS) -MMD -MP $(CFLAGS)
LDHARDEN := -pie -Wl,-z,relro,-z,now,-z,noexecstack -Wl,--as-needed

ifneq ($(SANITIZE),)
  OPT      := -O1 -g -fno-omit-frame-pointer
  HARDEN   := -fPIC
  ALL_CFLAGS += -fsanitize=$(SANITIZE) -fno-sanitize-recover=all
  LDHARDEN += -fsanitize=$(SANITIZE)
endif

# One folder per product; every .c in it is part of that product.
PROTO_SRC   := $(wildcard proto/*.c)
COMMON_SRC  := $(wildcard common/*.c)
BROKERD_SRC := $(filter-out brokerd/main.c,$(wildcard brokerd/*.c))
LIB_SRC     := $(wildcard client/lib/*.c)
PORTCTL_SRC := $(wildcard client/portctl/*.c)
PRELOAD_SRC := $(wildcard client/preload/*.c)
EXAMPLES    := $(patsubst examples/%.c,$(BUILD)/examples/%,$(wildcard examples/*.c))
UNIT_TESTS  := $(patsubst tests/unit/%.c,$(BUILD)/%,$(wildcard tests/unit/test_*.c))
HELPERS     := $(patsubst tests/helpers/%.c,$(BUILD)/%,$(wildcard tests/helpers/*.c))
FUZZERS     := $(patsubst tests/fuzz/%.c,$(BUILD)/%,$(wildcard tests/fuzz/fuzz_*.c))

PC_SED = sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	     -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|'

# What a link line takes from $^ (the .d files add headers to it).
SOURCES = $(filter %.c %.o %.a,$^)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
PROTO_OBJ   := $(call obj,$(PROTO_SRC))
COMMON_OBJ  := $(call obj,$(COMMON_SRC))
BROKERD_OBJ := $(call obj,$(BROKERD_SRC))
LIB_OBJ     := $(call obj,$(LIB_SRC))

TARGETS := $(BUILD)/brokerd $(BUILD)/portctl $(BUILD)/libportbroker.so \
           $(BUILD)/libportbroker.a $(BUILD)/portbroker.pc $(BUILD)/portbroker.h \
           $(BUILD)/libportbroker-preload.so

.PHONY: all check check-deps check-unit check-integration check-sanitize check-valgrind test run install \
        clean helpers unit-tests fuzzers
all: $(TARGETS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c $< -o $@

# brokerd embeds the guard's BPF object (guard.c, .incbin).
GUARD_BPF_OBJ := $(BUILD)/bpf/bind-guard.bpf.o
$(GUARD_BPF_OBJ): brokerd/bpf/bind-guard.bpf.c brokerd/bpf/bind-guard.h
	@mkdir -p $(dir $@)
	$(CLANG) -O2 -g -Wall -Werror -target bpf $(if $(MULTIARCH),-I/usr/include/$(MULTIARCH)) -c $< -o $@

$(BUILD)/obj/brokerd/guard.o: $(GUARD_BPF_OBJ)
$(BUILD)/obj/brokerd/guard.o: CPPFLAGS += -DGUARD_BPF_OBJECT='"$(GUARD_BPF_OBJ)"'

$(BUILD)/brokerd: $(BUILD)/obj/brokerd/main.o $(BROKERD_OBJ) $(PROTO_OBJ) $(COMMON_OBJ)
	$(CC) $(ALL_CFLAGS) $(LDHARDEN) $^ $(DEPS_LIBS) -o $@

$(BUILD)/libportbroker.a: $(LIB_OBJ) $(PROTO_OBJ) $(COMMON_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libportbroker.so: $(LIB_OBJ) $(PROTO_OBJ) $(COMMON_OBJ)
	$(CC) $(ALL_CFLAGS) -shared -Wl,-soname,libportbroker.so.$(SOVERSION) \
		-Wl,--version-script=client/lib/libportbroker.sym -Wl,-z,relro,-z,now $^ -lpthread -o $@

# The preload library is loaded into programs built without sanitizers, so it
# is always built without them (from objects of its own).
PLAIN_CFLAGS = $(filter-out -fsanitize=% -fno-sanitize-recover=all,$(ALL_CFLAGS))
PRELOAD_OBJ := $(patsubst %.c,$(BUILD)/obj-preload/%.o,$(PRELOAD_SRC) $(PROTO_SRC) $(COMMON_SRC))

$(BUILD)/obj-preload/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(PLAIN_CFLAGS) -c $< -o $@

$(BUILD)/libportbroker-preload.so: $(PRELOAD_OBJ) client/preload/preload.sym
	$(CC) $(PLAIN_CFLAGS) -shared -Wl,--version-script=client/preload/preload.sym -Wl,-z,relro,-z,now \
		$(filter %.o,$^) -o $@

$(BUILD)/portctl: $(call obj,$(PORTCTL_SRC)) $(BUILD)/libportbroker.a
	$(CC) $(ALL_CFLAGS) $(LDHARDEN) $^ -lpthread -o $@

# What the build takes from where `make install` puts things: portctl the
# shim's path, brokerd its configuration file's, portbroker.pc the directories. $(BUILD)/install-dirs holds
# them and is rewritten only when one changes, so that `make install
# PREFIX=/usr` after a plain `make` rebuilds what uses them (make compares
# times, not variables).
INSTALL_DIRS = PREFIX=$(PREFIX) LIBDIR=$(LIBDIR) INCLUDEDIR=$(INCLUDEDIR) PRELOAD_PATH=$(PRELOAD_PATH) \
	SYSCONFDIR=$(SYSCONFDIR)
.PHONY: FORCE
FORCE:
$(BUILD)/install-dirs: FORCE
	@mkdir -p $(BUILD)
	@printf '%s\n' $(INSTALL_DIRS) | cmp -s - $@ || printf '%s\n' $(INSTALL_DIRS) > $@

$(BUILD)/obj/client/portctl/run.o: $(BUILD)/install-dirs
$(BUILD)/obj/client/portctl/run.o: CPPFLAGS += -DPB_PRELOAD_PATH='"$(PRELOAD_PATH)"'
$(BUILD)/obj/brokerd/main.o: $(BUILD)/install-dirs
$(BUILD)/obj/brokerd/main.o: CPPFLAGS += -DPB_CONFIG_PATH='"$(SYSCONFDIR)/portbroker/brokerd.conf"' \
	-DPB_POLICY_DIR='"$(SYSCONFDIR)/portbroker/policy.d"'

$(BUILD)/portbroker.h: client/lib/portbroker.h
	@mkdir -p $(BUILD)
	cp $< $@

$(BUILD)/portbroker.pc: client/lib/portbroker.pc.in Makefile $(BUILD)/install-dirs
	@mkdir -p $(BUILD)
	$(PC_SED) $< > $@

# Unit tests link every object but main.o.
# Their dependency files go under obj/, so that build/test_* is only the tests.
$(BUILD)/test_%: tests/unit/test_%.c $(BROKERD_OBJ) $(PROTO_OBJ) $(COMMON_OBJ) $(LIB_OBJ)
	@mkdir -p $(BUILD)/obj/tests/unit
	$(CC) $(CPPFLAGS) -Ibrokerd $(ALL_CFLAGS) -MF $(BUILD)/obj/tests/unit/test_$*.d $(LDHARDEN) $(SOURCES) \
		$(DEPS_LIBS) -lcmocka -lpthread -o $@

# test_cli tests portctl's shared helpers, which are not in any library.
$(BUILD)/test_cli: $(BUILD)/obj/client/portctl/cli.o
$(BUILD)/test_cli: CPPFLAGS += -Iclient/portctl

# test_proto plays a kernel race through a wrapper of recvmsg(); test_peer
# older kernels' SO_PEERPIDFD through one of getsockopt().
$(BUILD)/test_proto: LDHARDEN += -Wl,--wrap=recvmsg
$(BUILD)/test_peer: LDHARDEN += -Wl,--wrap=getsockopt

# Fuzz targets (tests/fuzz/fuzz_<name>.c). FUZZ_SRC_<name> lists the
# sources each needs besides itself: linked as objects into the standalone
# build (gcc, with tests/fuzz/driver.c; make check-unit runs it and replays
# its corpus) and compiled in, instrumented, for libFuzzer.
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SRC_proto    := proto/proto.c proto/endpoint.c
# The monitor's message set is brokerd's (with the peer it carries).
FUZZ_SRC_privsep  := brokerd/privsep.c brokerd/peer.c proto/fdpass.c proto/endpoint.c common/pidfd-util.c
FUZZ_LIBS_privsep := $(shell $(PKG_CONFIG) --libs libsystemd 2>/dev/null)
# Endpoints, rules and the reserved-ports list (policy.c asks peer.c for groups).
FUZZ_SRC_endpoint  := proto/endpoint.c proto/proto.c brokerd/policy.c brokerd/reserved.c brokerd/peer.c \
                      common/pidfd-util.c
FUZZ_LIBS_endpoint := $(FUZZ_LIBS_privsep)
# The worker's whole connection state machine. Its monitor is a stand-in in
# the target, answering inside the worker's poll() (hence the wrap); no
# bind guard (the worker never binds).
FUZZ_SRC_conn  := $(addprefix brokerd/,broker.c conn.c request.c watch.c monitor-wrap.c lease.c policy.c \
                  store.c peer.c privsep.c log.c kernel.c safepath.c unixdir.c reservation.c ruleset.c \
                  policydir.c) $(PROTO_SRC) $(COMMON_SRC)
FUZZ_LIBS_conn := $(shell $(PKG_CONFIG) --libs libsystemd sqlite3 2>/dev/null) -Wl,--wrap=poll
FUZZ_CLANG_conn := -include tests/fuzz/clang-compat.h
$(BUILD)/libfuzzer_conn: tests/fuzz/clang-compat.h

$(BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/driver.c
	$(CC) $(CPPFLAGS) -Ibrokerd $(ALL_CFLAGS) $(LDHARDEN) $(SOURCES) $(FUZZ_LIBS_$*) -o $@

$(foreach t,$(FUZZ_TARGETS),$(eval $(BUILD)/fuzz_$(t): $(call obj,$(FUZZ_SRC_$(t)))))

# Coverage-guided fuzzing with clang's libFuzzer (`make fuzz`): each target
# as above, instrumented. FUZZ_TIME seconds each.
FUZZ_TIME    ?= 60
LIBFUZZER_FLAGS := -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all

$(BUILD)/libfuzzer_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h
	@mkdir -p $(BUILD)
	clang $(CPPFLAGS) -Ibrokerd $(LIBFUZZER_FLAGS) $(FUZZ_CLANG_$*) $< $(FUZZ_SRC_$*) $(FUZZ_LIBS_$*) -o $@

$(foreach t,$(FUZZ_TARGETS),$(eval $(BUILD)/libfuzzer_$(t): $(FUZZ_SRC_$(t))))

.PHONY: fuzz
fuzz: $(foreach t,$(FUZZ_TARGETS),$(BUILD)/libfuzzer_$(t))
	bash tests/fuzz/run.sh $(BUILD) $(FUZZ_TIME) $(FUZZ_TARGETS)

$(BUILD)/examples/%: examples/%.c $(BUILD)/libportbroker.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) $(LDHARDEN) $(SOURCES) -lpthread -o $@

$(BUILD)/%: tests/helpers/%.c $(BUILD)/libportbroker.a
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) $(LDHARDEN) $(SOURCES) $(DEPS_LIBS) -lpthread -lm -o $@

helpers: $(HELPERS) $(EXAMPLES)
unit-tests: $(UNIT_TESTS)
fuzzers: $(FUZZERS)

# --- tests --------------------------------------------------------------------

check-deps:
	@bash tests/setup-deps.sh

# The plain build's integration suite runs brokerd under valgrind (errors
# and leaks fail the test that made them; the few tests valgrind cannot run
# say why they are skipped); the sanitizer build's runs it natively, timing
# and all.
check: check-deps
	$(MAKE) check-deb
	$(MAKE) test VALGRIND=1
	$(MAKE) test BUILD=build-sanitize SANITIZE=address,undefined
	$(MAKE) fuzz FUZZ_TIME=10
	@echo "make check: all suites passed (plain with brokerd under valgrind, and SANITIZE=address,undefined)"

test: all unit-tests helpers fuzzers
	$(MAKE) check-unit check-integration

# The integration suite with brokerd under valgrind's memcheck.
check-valgrind: all helpers
	$(MAKE) check-integration VALGRIND=1

check-unit: unit-tests fuzzers
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $$t; done
	@set -e; for f in $(FUZZERS); do echo "== $$f"; $$f; \
		c=tests/fuzz/corpus/$${f##*/fuzz_}; if [ -d $$c ]; then $$f $$c/*; fi; done

# As root only (else it says the tests were skipped and fails); from a copy
# other uids can reach when they cannot reach $(BUILD). See the script.
check-integration: all helpers
	PYTEST='$(PYTEST)' PB_VALGRIND='$(VALGRIND)' bash tests/run-integration.sh $(BUILD) -q -ra $(PYTEST_ARGS)

# The Debian packages (root, about 20 s): built from a copy of the tree,
# lintian, installed into an overlay of this machine's root, run and purged.
# See tests/package/test_deb.py.
.PHONY: check-deb
check-deb:
	$(PYTEST) -q -ra tests/package

# `make bench` (root): builds what it needs, then runs bench/run.py in a
# network namespace of its own (loopback only). See bench/README.md.
$(BUILD)/pb-bench: bench/pb-bench.c $(BUILD)/libportbroker.a
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) $(LDHARDEN) $(SOURCES) -lpthread -o $@

.PHONY: bench
bench: all helpers $(BUILD)/pb-bench
	unshare -n sh -c 'ip link set lo up && exec /usr/bin/python3 bench/run.py --build $(abspath $(BUILD)) $(BENCH_ARGS)'

# --- run and install ----------------------------------------------------------

run: all
	@install -d -m 0755 .portbroker
	@echo "brokerd: state in $(CURDIR)/.portbroker; you are its admin. In another shell:"
	@echo "  export PORTBROKER_SOCKET=$(CURDIR)/.portbroker/control.sock"
	exec $(BUILD)/brokerd --foreground --config /dev/null --control $(CURDIR)/.portbroker/control.sock \
		--db $(CURDIR)/.portbroker/db/portbroker.db

install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig \
		$(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(UNITDIR)
	install -m 0755 $(BUILD)/brokerd $(DESTDIR)$(SBINDIR)/brokerd
	install -m 0755 $(BUILD)/portctl $(DESTDIR)$(BINDIR)/portctl
	install -m 0755 $(BUILD)/libportbroker.so $(DESTDIR)$(LIBDIR)/libportbroker.so.$(VERSION)
	ln -sf libportbroker.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libportbroker.so.$(SOVERSION)
	ln -sf libportbroker.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libportbroker.so
	install -m 0644 $(BUILD)/libportbroker.a $(DESTDIR)$(LIBDIR)/libportbroker.a
	$(PC_SED) client/lib/portbroker.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/portbroker.pc
	install -m 0644 client/lib/portbroker.h $(DESTDIR)$(INCLUDEDIR)/portbroker.h
	install -d $(DESTDIR)$(LIBDIR)/portbroker
	install -m 0755 $(BUILD)/libportbroker-preload.so $(DESTDIR)$(PRELOAD_PATH)
	install -m 0644 man/portctl.1 $(DESTDIR)$(MANDIR)/man1/portctl.1
	install -m 0644 man/brokerd.8 $(DESTDIR)$(MANDIR)/man8/brokerd.8
	install -d $(DESTDIR)$(BASHCOMPDIR)
	install -m 0644 client/portctl/portctl.bash-completion $(DESTDIR)$(BASHCOMPDIR)/portctl
	sed -e 's|@SBINDIR@|$(SBINDIR)|' -e 's|@BINDIR@|$(BINDIR)|' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|' \
		systemd/portbrokerd.service.in > $(DESTDIR)$(UNITDIR)/portbrokerd.service
	@# The settings are the admin's once installed: never overwritten.
	install -d $(DESTDIR)$(SYSCONFDIR)/portbroker $(DESTDIR)$(SYSCONFDIR)/portbroker/policy.d
	test -e $(DESTDIR)$(SYSCONFDIR)/portbroker/brokerd.conf || \
		install -m 0644 systemd/brokerd.conf $(DESTDIR)$(SYSCONFDIR)/portbroker/brokerd.conf
	install -m 0644 systemd/portbrokerd.socket $(DESTDIR)$(UNITDIR)/portbrokerd.socket
	install -d $(DESTDIR)$(SYSUSERSDIR)
	install -m 0644 systemd/portbroker.sysusers $(DESTDIR)$(SYSUSERSDIR)/portbroker.conf
	@# The user the unit runs brokerd as: made now when installing for this machine.
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ] && ! getent passwd portbroker >/dev/null; then \
		systemd-sysusers $(SYSUSERSDIR)/portbroker.conf 2>/dev/null || bash tests/add-user.sh; fi

# Every file `make install` writes, with the same variables: `make uninstall`
# removes them and the shim's directory. User portbroker stays: files
# elsewhere may still be its; so do brokerd.conf and policy.d, the admin's.
INSTALLED = $(SBINDIR)/brokerd $(BINDIR)/portctl $(INCLUDEDIR)/portbroker.h $(PRELOAD_PATH) \
	$(addprefix $(LIBDIR)/,libportbroker.so.$(VERSION) libportbroker.so.$(SOVERSION) libportbroker.so \
		libportbroker.a pkgconfig/portbroker.pc) \
	$(MANDIR)/man1/portctl.1 $(MANDIR)/man8/brokerd.8 $(UNITDIR)/portbrokerd.service \
	$(UNITDIR)/portbrokerd.socket $(SYSUSERSDIR)/portbroker.conf $(BASHCOMPDIR)/portctl

.PHONY: uninstall
uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	if [ -d $(DESTDIR)$(LIBDIR)/portbroker ]; then rmdir $(DESTDIR)$(LIBDIR)/portbroker; fi

clean:
	rm -rf build build-sanitize

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
