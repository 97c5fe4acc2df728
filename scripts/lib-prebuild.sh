# shellcheck shell=bash
# The program cache prebuild's key, for scripts/setup.sh. Sourced, not run.
# Uses setup's $repo, $venv, $stamp_file and $kbuild.

# the key; its last command is `true`: under pipefail a missing piece (no
# cache directory yet on a fresh machine) must not end setup
prebuild_key() { {
    find "$repo/tracer" "$repo/bpf" -type f \( -name '*.py' -o -name '*.c' -o -name '*.h' \) -print0 2>/dev/null \
        | sort -z | xargs -0 sha256sum 2>/dev/null
    head -1 "$stamp_file" 2>/dev/null
    "$venv/bin/python" -c 'import bcc; print(bcc.__version__)' 2>&1
    uname -srvm; nproc
    sha256sum /sys/kernel/btf/vmlinux 2>&1
    stat -L -c '%n %s %Y' "$kbuild/Makefile" "$kbuild/include/generated/autoconf.h" 2>&1
    env | grep -E '^(TRACER|BCC)_' | sort
    stat -L -c 'cache %i' "${TRACER_PROGRAM_CACHE_DIR:-${TRACER_CACHE:-/var/cache/tracer}/programs}" 2>&1
    true
} | sha256sum | cut -d' ' -f1; }
