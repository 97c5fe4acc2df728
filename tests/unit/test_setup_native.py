"""scripts/setup.sh where the compiler or Python headers cannot be installed
(scripts/lib-native.sh): tracer._native is optional, so setup goes on and
says in one line that it is skipped and what that costs. The detection
compiles a real file with the real compiler when there is one; apt and
python are stand-ins on PATH: nothing is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "scripts" / "lib-native.sh"


def _bash(script: str, tmp_path: Path, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CC"}  # the machine's CC would decide
    env.update(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", FAKE_DIR=str(tmp_path), **env_extra)
    return subprocess.run(["bash", "-c", f"set -euo pipefail; source {LIB}; {script}"],
                          env=env, capture_output=True, text=True, timeout=60)


def _stand_in(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / "bin").mkdir(exist_ok=True)
    (tmp_path / "bin" / name).write_text(text)
    (tmp_path / "bin" / name).chmod(0o755)


def _python_with_include(tmp_path: Path, include: Path, cc: str = "cc") -> Path:
    """A stand-in python whose sysconfig names CC and this include folder."""
    _stand_in(tmp_path, "fake-python", f"""#!/bin/sh
case "$2" in
    *get_config_var*) echo "{cc}" ;;
    *get_paths*) echo "{include}" ;;
    *) exit 1 ;;
esac
""")
    return tmp_path / "bin" / "fake-python"


def _compiler() -> str | None:
    return shutil.which("gcc") or shutil.which("cc")


def test_the_real_toolchain_is_detected_where_it_is(tmp_path):
    """This python with this machine's compiler: ok exactly when a compile of Python.h works."""
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler on this machine: the other tests check the detection says so")
    done = _bash(f"native_toolchain_ok {sys.executable}", tmp_path, CC=cc)
    include = Path(subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['include'])"],
                                  capture_output=True, text=True).stdout.strip())
    assert (done.returncode == 0) == (include / "Python.h").is_file(), done.stderr


def test_no_compiler_is_no_toolchain(tmp_path):
    include = tmp_path / "include"
    include.mkdir()
    (include / "Python.h").write_text("int python_h;\n")
    python = _python_with_include(tmp_path, include, cc="no-such-compiler-issue9")
    assert _bash(f"native_toolchain_ok {python}", tmp_path).returncode == 1
    assert _bash(f"native_toolchain_ok {python}", tmp_path, CC="/bin/false").returncode == 1


@pytest.mark.skipif(_compiler() is None, reason="needs a C compiler to tell headers apart")
def test_headers_are_what_a_compile_finds(tmp_path):
    include = tmp_path / "include"
    include.mkdir()
    python = _python_with_include(tmp_path, include, cc=_compiler())
    assert _bash(f"native_toolchain_ok {python}", tmp_path).returncode == 1  # no Python.h (python3-dev missing)
    (include / "Python.h").write_text("#error no python headers here\n")
    assert _bash(f"native_toolchain_ok {python}", tmp_path).returncode == 1  # one that does not compile
    (include / "Python.h").write_text("#include <stdio.h>\nint python_h;\n")  # libc's headers too
    assert _bash(f"native_toolchain_ok {python}", tmp_path).returncode == 0
    # CC from the environment wins over sysconfig's, flags and all (as setuptools does)
    assert _bash(f"native_toolchain_ok {python}", tmp_path, CC=f"{_compiler()} -pthread").returncode == 0
    assert _bash(f"native_toolchain_ok {python}", tmp_path, CC="/bin/false").returncode == 1


def test_skipped_line_says_why_and_what_it_costs(tmp_path):
    include = tmp_path / "include"
    include.mkdir()
    python = _python_with_include(tmp_path, include, cc="no-such-compiler-issue9")
    done = _bash(f"native_skipped_line {python} /var/log/tracer-setup.log", tmp_path)
    assert done.returncode == 0 and "\n" not in done.stdout
    line = done.stdout
    assert line.startswith("tracer._native skipped: no C compiler or Python headers")
    assert "gcc libc6-dev python3-dev" in line and "/var/log/tracer-setup.log" in line
    assert "same output" in line and "µs more CPU per traced packet" in line
    if _compiler():  # a toolchain that works but a build that failed: a different reason, the same cost
        (include / "Python.h").write_text("int python_h;\n")
        python = _python_with_include(tmp_path, include, cc=_compiler())
        line = _bash(f"native_skipped_line {python} LOG", tmp_path).stdout
        assert line.startswith("tracer._native did not build (see LOG)") and "µs more CPU" in line


_APT = """#!/bin/sh
# records each install; FAKE_APT_FAILS names a package it cannot install
echo "$*" >> "$FAKE_DIR/apt-calls"
for a in "$@"; do [ "$a" = "${FAKE_APT_FAILS:-}" ] && { echo "E: Unable to locate package $a"; exit 100; }; done
exit 0
"""
# setup.sh's apt_install: the required packages, whose failure stops setup
_SETUP = 'setup_log=$FAKE_DIR/setup.log; apt_install() { apt-get install "$@" >>"$setup_log" 2>&1 || { echo "setup: error: apt" >&2; return 1; }; }; '


def _install(tmp_path: Path, args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    _stand_in(tmp_path, "apt-get", _APT)
    done = _bash(_SETUP + f"apt_install_with_native {args}; echo went-on", tmp_path, **env)
    calls = tmp_path / "apt-calls"
    return done, calls.read_text().splitlines() if calls.exists() else []


def test_packages_that_install_take_one_transaction(tmp_path):
    done, calls = _install(tmp_path, "tshark -- gcc python3-dev")
    assert done.returncode == 0 and "went-on" in done.stdout
    assert len(calls) == 1 and calls[0].endswith("tshark gcc python3-dev")


def test_native_packages_apt_cannot_install_do_not_stop_setup(tmp_path):
    done, calls = _install(tmp_path, "tshark -- gcc python3-dev", FAKE_APT_FAILS="python3-dev")
    assert done.returncode == 0 and "went-on" in done.stdout and done.stderr == ""  # said later, once
    assert len(calls) == 3 and calls[1].endswith("tshark")  # the required one alone,
    assert calls[2].endswith("gcc python3-dev")  # then the optional ones alone, once
    only = tmp_path / "only"  # nothing required is missing: apt is tried once
    only.mkdir()
    done, calls = _install(only, "-- gcc libc6-dev python3-dev", FAKE_APT_FAILS="gcc")
    assert done.returncode == 0 and "went-on" in done.stdout and len(calls) == 1


def test_required_packages_apt_cannot_install_stop_setup(tmp_path):
    done, calls = _install(tmp_path, "tshark -- gcc", FAKE_APT_FAILS="tshark")
    assert done.returncode != 0 and "went-on" not in done.stdout and "setup: error" in done.stderr


def test_nothing_missing_calls_no_apt(tmp_path):
    done, calls = _install(tmp_path, "--")
    assert done.returncode == 0 and calls == []


# setup.sh's native_install (scripts/lib-native.sh) on a copy of the sources
# with a real build (setup.py build_ext --inplace, the build pip's editable
# install runs) of a native/ that does not compile: never this tree's files.
_SETUP_SAYS = ('setup_log=$FAKE_DIR/setup.log; step() { printf "setup: %s\\n" "$*"; }; '
               'warn() { printf "setup: warning: %s\\n" "$*" >&2; }; '
               'quiet() { "$@" >>"$setup_log" 2>&1 || { echo "setup: error: $*" >&2; return 1; }; }; ')
STALE_LINE = "stale native build: run scripts/setup.sh"


def _built() -> Path:
    found = sorted((REPO / "tracer").glob("_native.*.so"))
    if not found or _compiler() is None:
        pytest.skip("needs this tree's tracer._native built and a C compiler (scripts/setup.sh builds it)")
    return found[0]


def _copy(tmp_path: Path) -> Path:
    """The parts a native build and tracer.native's check read, with this
    tree's built module: current until native/ changes."""
    copy = tmp_path / "repo"
    (copy / "tracer").mkdir(parents=True)
    shutil.copytree(REPO / "native", copy / "native")
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(REPO / name, copy / name)
    for name in ("__init__.py", "own_env.py", "native.py"):
        shutil.copy(REPO / "tracer" / name, copy / "tracer" / name)
    shutil.copy(_built(), copy / "tracer")
    return copy


def _why_not(copy: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRACER_NATIVE"}
    # -S: the copy's files, not the editable install's (it maps tracer._native to this tree's)
    return subprocess.run([sys.executable, "-S", "-c", "import sys; sys.path.insert(0, sys.argv[1]); from tracer import native; "
                           "print(native.__file__); print(native.why_not())", str(copy)],
                          env=env, capture_output=True, text=True, timeout=60).stdout


def _native_install(tmp_path: Path, copy: Path, stamp: str, install: str) -> subprocess.CompletedProcess:
    return _bash(_SETUP_SAYS + f"native_install {sys.executable} {copy} {tmp_path}/stamp {stamp} {install}; "
                 "echo went-on", tmp_path)


def test_a_native_build_that_fails_leaves_no_stale_module_and_is_tried_again_when_the_sources_change(tmp_path):
    copy = _copy(tmp_path)
    assert _why_not(copy) == f"{copy}/tracer/native.py\n\n"  # the copy's module, current
    good = copy / "native" / "address_ids.c"
    source = good.read_text()
    good.write_text(source + "#error deliberately broken (test_setup_native)\n")
    build = f"env -C {copy} {sys.executable} setup.py build_ext --inplace"
    done = _native_install(tmp_path, copy, "stamp-1", build)
    assert done.returncode == 0 and "went-on" in done.stdout, done.stderr
    # the build failed (setup.py's extension is optional: only a warning) and left the old module behind ...
    assert "building extension \"tracer._native\" failed" in (tmp_path / "setup.log").read_text()
    # ... which setup does not take for a build: it removes it and says why, the compiler's error included
    assert "tracer._native built" not in done.stdout and not list((copy / "tracer").glob("_native*.so"))
    warning, = done.stderr.splitlines()
    assert warning.startswith("setup: warning: tracer._native did not build (see ")
    assert ("the compiler said: native/address_ids.c:" in warning
            and "error: #error deliberately broken (test_setup_native)" in warning), warning
    assert (tmp_path / "stamp").read_text().splitlines() == ["stamp-1", "no-native"]
    # the Python twins are used: not a stale build, so a test run goes on (tests/conftest.py)
    why = _why_not(copy).splitlines()[1]
    assert why.startswith("not built") and not why.startswith(STALE_LINE)
    # the same sources again: not rebuilt (setup stays quick), said again
    done = _native_install(tmp_path, copy, "stamp-1", f"touch {tmp_path}/installed")
    assert done.returncode == 0 and not (tmp_path / "installed").exists()
    assert "tracer installed (pyproject and native sources unchanged)" in done.stdout
    assert "tracer._native did not build" in done.stderr
    # fixed sources (another stamp): the build is tried again (here a stand-in that puts the good module back)
    good.write_text(source)
    done = _native_install(tmp_path, copy, "stamp-2", f"cp {_built()} {copy}/tracer/")
    assert done.returncode == 0 and "native: tracer._native built" in done.stdout and done.stderr == "", done.stderr
    assert (tmp_path / "stamp").read_text().splitlines() == ["stamp-2"]
    assert _why_not(copy).splitlines()[1:] == [""]


def test_an_install_that_fails_stops_setup(tmp_path):
    copy = _copy(tmp_path)
    done = _native_install(tmp_path, copy, "stamp-1", "false")
    assert done.returncode != 0 and "went-on" not in done.stdout and "setup: error" in done.stderr
    assert not (tmp_path / "stamp").exists()
