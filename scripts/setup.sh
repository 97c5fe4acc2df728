#!/usr/bin/env bash
# One-command setup for tracer on Debian 12 / Ubuntu 22.04 / 24.04, as root.
# Idempotent: a second run only checks, and takes a few seconds.
#   distro packages (BCC, Docker, iproute2, iptables, conntrack, busybox-static, ...)
#   kernel headers for BCC, bpffs/tracefs/debugfs mounts, forwarding sysctls,
#   a Docker engine (started here when none answers: no systemd assumed),
#   .venv (system python + --system-site-packages for bcc), `tracer` on PATH,
#   the offline lab image, and the default option sets' BPF programs in the
#   program cache (their first start skips clang).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib-dockerd.sh
source "$here/lib-dockerd.sh"
# shellcheck source=scripts/lib-native.sh
source "$here/lib-native.sh"
# shellcheck source=scripts/lib-prebuild.sh
source "$here/lib-prebuild.sh"

setup_log=/var/log/tracer-setup.log
# quiet commands go to the log; on failure show its tail
quiet() {
    if ! "$@" >>"$setup_log" 2>&1; then
        printf 'setup: error: `%s` failed; last lines of %s:\n' "$*" "$setup_log" >&2
        tail -n 20 "$setup_log" >&2
        return 1
    fi
}
step() { printf 'setup: %s\n' "$*"; }
warn() { printf 'setup: warning: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root: sudo $0"
start=$SECONDS

# ---------------------------------------------------------------- distro packages
. /etc/os-release
distro=${ID:-unknown}
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
kver=$(uname -r)
case "$distro" in
    debian|ubuntu) ;;
    *) case " ${ID_LIKE:-} " in *" debian "*|*" ubuntu "*) ;; *) die "unsupported distro '$distro' (Debian 12, Ubuntu 22.04/24.04)";; esac ;;
esac

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

required=(python3-bpfcc bpfcc-tools iproute2 iptables nftables python3-nftables conntrack busybox-static python3-venv
          iperf3 apache2-utils tshark tcpdump procps kmod util-linux ca-certificates)
# libpcap compiles filter expressions (tracer/pcap.py); renamed libpcap0.8t64
# with the 64-bit time_t transition (Ubuntu 24.04, Debian 13)
ver=${VERSION_ID:-0}; ver=${ver%%.*}
if [[ $distro == ubuntu && $ver -ge 24 || $distro == debian && $ver -ge 13 ]]; then required+=(libpcap0.8t64); else required+=(libpcap0.8); fi
# an engine from docker-ce conflicts with docker.io: keep whichever is there
if ! installed docker-ce; then required+=(docker.io); fi
if [[ $distro == ubuntu ]]; then
    # (Ubuntu's chromium is a snap: the report's browser test says so and skips there)
    optional=(linux-tools-common "linux-tools-$kver")
    generic_headers=linux-headers-generic
else
    optional=(bpftool)
    generic_headers=linux-headers-$arch
    # headless Chromium: the tests look at `tracer report` as a person would (tests/browser.py)
    required+=(chromium)
fi

missing=()
for p in "${required[@]}"; do installed "$p" || missing+=("$p"); done
# the compiler and Python headers build tracer._native (native/*.c, setup.py):
# optional like the extension, so an apt that cannot install them does not stop setup
native_missing=()
for p in "${TRACER_NATIVE_PACKAGES[@]}"; do installed "$p" || native_missing+=("$p"); done
# headers: the running kernel's when present, else the distro's generic ones
headers_ok=0
if installed "linux-headers-$kver" || installed "$generic_headers" || [[ -e /lib/modules/$kver/build ]]; then headers_ok=1; fi
opt_missing=()
for p in "${optional[@]}"; do installed "$p" || opt_missing+=("$p"); done
if [[ $distro == ubuntu ]] && command -v bpftool >/dev/null && bpftool version >/dev/null 2>&1; then opt_missing=(); fi
if [[ $distro != ubuntu ]] && command -v bpftool >/dev/null; then opt_missing=(); fi

# optional packages and headers that apt could not provide for this kernel are
# not retried on every run (that would cost an apt-get update each time)
tried_stamp=/var/lib/tracer/apt-tried-$kver
if ((${#missing[@]} == 0)) && [[ -f $tried_stamp ]]; then
    opt_missing=()
    native_missing=()
    headers_ok=1
fi

if ((${#missing[@]} == 0 && headers_ok == 1 && ${#opt_missing[@]} == 0 && ${#native_missing[@]} == 0)); then
    step "packages: all present"
else
    step "packages: installing ${missing[*]:-} ${native_missing[*]:-} ${opt_missing[*]:-} $( ((headers_ok)) || echo kernel-headers)"
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=a
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections
    if ((${#missing[@]} || headers_ok == 0)); then
        quiet apt-get update
    else  # only optional packages wanted: their failure is said below
        apt-get update >>"$setup_log" 2>&1 || true
    fi
    apt_install() { quiet apt-get install -y --no-install-recommends -o Dpkg::Use-Pty=0 "$@"; }
    apt_install_with_native "${missing[@]}" -- "${native_missing[@]}"
    if ((headers_ok == 0)); then
        if apt-cache show "linux-headers-$kver" >/dev/null 2>&1; then
            apt_install "linux-headers-$kver"
        elif apt-cache show "$generic_headers" >/dev/null 2>&1; then
            step "packages: no linux-headers-$kver in apt; using $generic_headers (BCC gets offsets from BTF)"
            apt_install "$generic_headers"
        else
            warn "no kernel headers package found; BCC may refuse to compile"
        fi
    fi
    for p in "${opt_missing[@]}"; do
        apt_install "$p" 2>/dev/null || warn "optional package $p not available (bpftool is only used for checks)"
    done
    mkdir -p "$(dirname "$tried_stamp")" && touch "$tried_stamp"
fi

# ---------------------------------------------------------------- kernel mounts and sysctls
mount_if_missing() { # type dir
    if ! mountpoint -q "$2"; then
        mount -t "$1" "$1" "$2" && step "mounted $1 on $2" || warn "could not mount $1 on $2"
    fi
}
mount_if_missing debugfs /sys/kernel/debug
mount_if_missing tracefs /sys/kernel/tracing
mount_if_missing bpf /sys/fs/bpf
step "mounts: bpffs, tracefs, debugfs present"

modprobe br_netfilter 2>/dev/null || true
sysctl -q -w net.ipv4.ip_forward=1
if [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then
    sysctl -q -w net.bridge.bridge-nf-call-iptables=1
else
    warn "br_netfilter unavailable: bridged traffic will not pass iptables hooks"
fi
step "sysctls: ip_forward=1, bridge-nf-call-iptables=$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo n/a)"

# ---------------------------------------------------------------- docker engine
ensure_dockerd || die "no Docker engine; see ${TRACER_DOCKERD_LOG}"

# ---------------------------------------------------------------- python venv
venv=$repo/.venv
sys_python=/usr/bin/python3   # the distro python that has bcc (not pyenv's)
venv_ok() {
    [[ -x $venv/bin/python ]] &&
        grep -q '^include-system-site-packages *= *true' "$venv/pyvenv.cfg" 2>/dev/null &&
        "$venv/bin/python" -c 'import sys; assert sys.base_prefix == "/usr"' 2>/dev/null
}
if ! venv_ok; then
    step "venv: creating $venv from $sys_python with --system-site-packages"
    if [[ -e $venv ]]; then  # e.g. a venv made elsewhere (another python, a shared folder's host)
        mv "$venv" "$venv.replaced.$(date +%s)"
        warn "moved the existing $venv aside (not made from $sys_python with system site packages)"
    fi
    quiet "$sys_python" -m venv --system-site-packages "$venv"
fi
stamp_file=$venv/.tracer-install-stamp
# the install builds tracer._native in place: its sources are part of the stamp
# (and whether it can be compiled here: a compiler installed later builds it)
toolchain=ok; native_toolchain_ok "$venv/bin/python" || toolchain=none
stamp=$(cat "$repo/pyproject.toml" "$repo/setup.py" "$repo"/native/*.[ch] <("$venv/bin/python" -V 2>&1) \
    <([[ $toolchain == ok ]] || echo "no compiler") | sha256sum | cut -d' ' -f1)
[[ -x $venv/bin/tracer ]] || rm -f "$stamp_file"
# the stamp's second line, "no-native", remembers a build that failed with
# these sources and this toolchain: re-running setup stays quick (the Python twins are used)
native_install "$venv/bin/python" "$repo" "$stamp_file" "$stamp" \
    "$venv/bin/python" -m pip install --disable-pip-version-check -e "$repo[test]"
"$venv/bin/python" -c 'import bcc' 2>/dev/null || warn "bcc does not import in $venv (python3-bpfcc missing?)"
ln -sfn "$venv/bin/tracer" /usr/local/bin/tracer
step "path: /usr/local/bin/tracer -> $venv/bin/tracer"

# ---------------------------------------------------------------- lab image (offline)
image_id=$("$venv/bin/python" -c 'from tracer.lab_image import ensure_image; print(ensure_image())')
step "lab image: tracer-lab:latest ${image_id:7:12}"

# ---------------------------------------------------------------- BPF programs (prebuilt)
# The default option sets' programs compiled into the program cache now
# (`tracer ... --compile-only`), as a package ships prebuilt objects: their
# first start skips clang. Best effort: where the kernel or the cache
# refuses, setup goes on and those starts compile as they always did.
# A re-run skips them while nothing the cache's key depends on changed (a
# stamp of the tracer's sources and bpf/, the install stamp, BCC's version,
# the kernel and its BTF and headers, the CPUs, TRACER_*/BCC_* settings,
# the cache's directory); an entry evicted since then only makes that
# first start compile.
kbuild=/lib/modules/$(uname -r)/build
prebuild_stamp_file=$venv/.tracer-prebuild-stamp
prebuild_stamp=$(prebuild_key)
if [[ -f $prebuild_stamp_file && $(cat "$prebuild_stamp_file") == "$prebuild_stamp" ]]; then
    step "programs: prebuilt in the program cache (sources, BCC and kernel unchanged)"
else
    prebuilt=0 tried=0
    # One build per mode serves every filter without an expression (which
    # parts are on, the port, protocol and sample rate are written in at
    # load: bpf/common.h TRC_FILTER_ON); trace's is record's too.
    for opts in "trace --port 8000" "latency --port 8000"; do
        tried=$((tried + 1))
        # shellcheck disable=SC2086  # the words are the options
        if "$venv/bin/tracer" $opts --compile-only >>"$setup_log" 2>&1; then prebuilt=$((prebuilt + 1)); fi
    done
    if [[ $prebuilt -eq $tried ]]; then
        # taken again: the first prebuild may have created the cache directory
        prebuild_key >"$prebuild_stamp_file" 2>/dev/null || true
        step "programs: trace, record and latency (any --port, --host, --container, --proto, --sample) prebuilt in the program cache"
    else
        rm -f "$prebuild_stamp_file"  # tried again next run
        warn "programs: $prebuilt of $tried default option sets prebuilt (see $setup_log); the others compile on their first start"
    fi
fi

step "done in $((SECONDS - start))s"
