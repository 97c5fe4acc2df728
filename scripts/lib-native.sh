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
TRACER_NATIVE_COST="trace and record use the Python twins instead: the same output, about 1-3 µs more CPU per traced packet"

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

# native_current PYTHON REPO: REPO's tracer._native is the one tracer uses:
# built from native/'s current sources, with every function (tracer.native's
# own check, whatever TRACER_NATIVE says), not merely importable: a build that
# failed leaves the last one's module behind, which imports. (-S: REPO's
# files, not a package installed elsewhere; they need the standard library only.)
native_current() {
    env -u TRACER_NATIVE "$1" -E -S -c 'import sys; sys.path.insert(0, sys.argv[1]); from tracer import native
sys.exit(native.native() is None)' "$2" >/dev/null 2>&1
}

# native_build_errors PYTHON REPO: the compiler's first errors on native/*.c,
# on one line (pip's quiet install keeps them out of sight), or nothing.
native_build_errors() {
    local py=$1 repo=$2 cc inc f said="" line n=0
    native_toolchain_ok "$py" || return 0
    cc=${CC:-$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("CC") or "cc")')}
    inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    for f in "$repo"/native/*.c; do
        # shellcheck disable=SC2086  # CC may carry flags
        while IFS= read -r line; do
            if [[ $line =~ :\ (fatal\ )?error:\  ]] && ((n++ < 3)); then said+="${said:+ | }${line#"$repo"/}"; fi
        done < <($cc -fsyntax-only -std=c11 -I"$inc" -DTRACER_NATIVE_SOURCES='""' "$f" 2>&1 || true)
        ((n < 3)) || break
    done
    printf '%s' "$said"
}

# native_install PYTHON REPO STAMP_FILE STAMP INSTALL...: run INSTALL (pip's
# editable install, which compiles tracer._native in place) unless STAMP_FILE
# holds STAMP (the sources, python and toolchain it ran with) and then either
# built the current module or failed to ("no-native"); then say which. When
# the build failed, the module a build before it left (older than native/;
# it would stop every test run as stale) is removed, so tracer and the tests
# use the Python twins, and the compiler's first errors are shown. A change
# to the sources or the toolchain changes STAMP: the build is tried again.
native_install() {
    local py=$1 repo=$2 stamp_file=$3 stamp=$4 errors
    shift 4
    if [[ -f $stamp_file && $(head -1 "$stamp_file") == "$stamp" ]] &&
        { grep -qx no-native "$stamp_file" || native_current "$py" "$repo"; }; then
        step "venv: tracer installed (pyproject and native sources unchanged)"
    else
        step "venv: pip install -e '.[test]'"
        quiet "$@" || return 1
        echo "$stamp" >"$stamp_file"
    fi
    if native_current "$py" "$repo"; then
        step "native: tracer._native built (compiled journey text)"
        return 0
    fi
    errors=$(native_build_errors "$py" "$repo") || errors=""
    rm -f "$repo"/tracer/_native.*.so
    warn "$(native_skipped_line "$py" "$setup_log")${errors:+; the compiler said: $errors}"
    grep -qx no-native "$stamp_file" || echo no-native >>"$stamp_file"
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
