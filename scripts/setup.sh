#!/usr/bin/env bash
# Installs what pgwarden needs on a Debian 12 host, idempotently: Debian packages, a kernel-header
# fallback for bcc, tracefs, and a virtual environment (.venv) with the project installed and
# Debian's bcc linked in. Used by `make demo`, `make test`, .ci/run and the Vagrantfile.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
venv="$top/.venv"
say() { printf 'setup: %s\n' "$*"; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    say "must run as root to install $1 (try: sudo make ...)" >&2
    exit 1
  fi
}

# --- Debian packages -------------------------------------------------------------------------
packages=(postgresql-15 postgresql-plpython3-15 postgresql-client-15 bpfcc-tools python3-bpfcc
          pgbouncer python3-venv openssl make)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
kernel=$(uname -r)
if [ ! -e "/lib/modules/$kernel/build/include/linux/kconfig.h" ] && \
   [ ! -e "/lib/modules/$kernel/source/include/linux/kconfig.h" ] && \
   ! dpkg-query -W -f='${Status}' linux-headers-amd64 2>/dev/null | grep -q "install ok installed"; then
  missing+=(linux-headers-amd64)
fi
if [ ${#missing[@]} -gt 0 ]; then
  need_root "${missing[*]}"
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- kernel headers for bcc ------------------------------------------------------------------
# bcc compiles probes against /lib/modules/$(uname -r)/{build,source}. Kernels without a matching
# headers package get Debian's generic ones: the probes read no kernel struct, so any recent
# headers compile them (measured on 6.18 with 6.1 headers).
if [ ! -e "/lib/modules/$kernel/build/include/linux/kconfig.h" ] && \
   [ ! -e "/lib/modules/$kernel/source/include/linux/kconfig.h" ]; then
  need_root "kernel header links"
  arch_dir=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
  common_dir=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$arch_dir" ] || [ -z "$common_dir" ]; then
    say "no kernel headers for $kernel and no Debian linux-headers-amd64 fallback found" >&2
    exit 1
  fi
  mkdir -p "/lib/modules/$kernel"
  ln -sfn "$arch_dir" "/lib/modules/$kernel/build"
  ln -sfn "$common_dir" "/lib/modules/$kernel/source"
  say "no headers for kernel $kernel: fell back to Debian's $(basename "$arch_dir") (build) and $(basename "$common_dir") (source)"
fi

# --- tracefs (bcc reads tracepoint formats from it) ------------------------------------------
if [ "$(id -u)" -eq 0 ] && [ ! -e /sys/kernel/tracing/events ] && [ ! -e /sys/kernel/debug/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || mount -t debugfs nodev /sys/kernel/debug || true
  say "mounted tracefs"
fi

# --- virtual environment -------------------------------------------------------------------
python=${PYTHON:-python3}
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then python=/usr/bin/python3; fi
stamp="$venv/.pgwarden-installed"
want=$(cat "$top/pyproject.toml" | sha256sum | cut -c1-16)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "creating virtual environment $venv with $("$python" --version 2>&1)"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip >/dev/null
  "$venv/bin/pip" install -q --disable-pip-version-check -e "$top[test]"
  echo "$want" > "$stamp"
fi
# bcc is Debian's (python3-bpfcc): pure Python over libbcc.so, so link it into the venv.
# The PyPI package named "bcc" is unrelated and must not be installed.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
[ -e "$site/bcc" ] || ln -s /usr/lib/python3/dist-packages/bcc "$site/bcc"
say "ready: $("$venv/bin/pgwarden" --version)"
