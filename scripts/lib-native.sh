# shellcheck shell=bash
# The compiler and headers that build tracer._native, for scripts/setup.sh.
# Sourced, not run.
#
# The extension is optional (setup.py: Extension(optional=True); every
# function in it has a Python twin, tracer/native.py), so the packages that
# build it are too: when apt cannot install them, setup goes on and says in
# one line what that costs, instead of stopping.

TRACER_NATIVE_PACKAGES=(gcc libc6-dev python3-dev)
# what running without the extension costs (docs/benchmarks.md, Session 8:
# JSON text 0.55 -> 1.51 µs, human text 0.67 -> 2.31 µs, capture layout
# 0.10 -> 0.31 µs per packet offline)
TRACER_NATIVE_COST="trace and record use the Python twins instead: the same output, about 1-2 µs more CPU per traced packet"

# native_toolchain_ok PYTHON: the C compiler that builds PYTHON's extensions
# ($CC, else the one PYTHON was built with, as setuptools picks it) compiles
# a file that includes Python.h (so libc's and Python's headers are there).
native_toolchain_ok() {
    local py=$1 cc inc
    cc=${CC:-$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("CC") or "cc")' 2>/dev/null)} || return 1
    inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null) || return 1
    # $cc unquoted: CC may carry flags ("gcc -pthread"), as setuptools allows
    # shellcheck disable=SC2086
    printf '#include <Python.h>\nint main(void) { return 0; }\n' |
        $cc -fsyntax-only -I"$inc" -x c - >/dev/null 2>&1 || return 1
}

# native_skipped_line PYTHON LOG: the one line that says why tracer._native
# was not built and what that costs (the caller prints it as a warning).
native_skipped_line() {
    if native_toolchain_ok "$1"; then
        printf 'tracer._native did not build (see %s): %s' "$2" "$TRACER_NATIVE_COST"
    else
        printf 'tracer._native skipped: no C compiler or Python headers (apt could not install %s, see %s; install them and re-run setup to build it): %s' \
            "${TRACER_NATIVE_PACKAGES[*]}" "$2" "$TRACER_NATIVE_COST"
    fi
}

# apt_install_with_native REQUIRED... -- NATIVE...: one apt transaction for
# both when it works (a fresh machine); else the REQUIRED alone through
# setup.sh's apt_install (their failure is setup's), while the NATIVE ones'
# failure is not an error: native_skipped_line says it once, where the
# extension is (not) built. apt's output goes to $setup_log.
apt_install_with_native() {
    local -a required=() native=()
    local a after=0
    for a in "$@"; do
        if [[ $a == -- ]]; then after=1; elif ((after)); then native+=("$a"); else required+=("$a"); fi
    done
    ((${#required[@]} + ${#native[@]})) || return 0
    apt-get install -y --no-install-recommends -o Dpkg::Use-Pty=0 "${required[@]}" "${native[@]}" \
        >>"$setup_log" 2>&1 && return 0
    ((${#required[@]})) || return 0
    apt_install "${required[@]}"
    # then the NATIVE ones alone, once: they may install where the whole set did not
    ((${#native[@]} == 0)) || apt-get install -y --no-install-recommends -o Dpkg::Use-Pty=0 "${native[@]}" \
        >>"$setup_log" 2>&1 || true
}
