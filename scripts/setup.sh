#!/usr/bin/env bash
# Installs the Debian packages Ferry's tests, lab and demo need. Silent and
# fast when they are all present, because `npm test` and `npm run demo` run it
# every time.
set -euo pipefail

# package: what Ferry uses it for
readonly -a NEEDED=(
  gcc         # compiles the test workloads
  make        # builds the test workloads
  libc6-dev   # headers and crt files for the test workloads
  iproute2    # lab: network namespaces, veth pairs, the bridge
  nftables    # locks a container's addresses during cutover
  procps      # ps, sysctl
  python3     # node-gyp for optional native npm modules; test probes
  util-linux  # unshare, nsenter, setpriv, findmnt
  psmisc      # fuser, killall for cleaning up after the lab
  openssl     # makes the cluster CA and host certificates for TLS (src/transport/tls.ts)
)

refuse() {
  echo "setup: $*" >&2
  exit 3
}

if [[ "$(uname -s)" != Linux || "$(uname -m)" != x86_64 ]]; then
  refuse "Ferry runs on Linux x86_64 only; this is $(uname -s) $(uname -m)"
fi

release=$(uname -r)
if [[ ! "$release" =~ ^([0-9]+)\.([0-9]+) ]]; then
  refuse "cannot read the kernel version from '$release'"
fi
major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
if (( major < 6 || (major == 6 && minor < 7) )); then
  refuse "Ferry needs kernel 6.7 or later (PAGEMAP_SCAN); this is $release"
fi

if [[ "$(id -u)" -ne 0 ]]; then
  refuse "run as root: Ferry checkpoints other users' processes, and this installs packages"
fi

if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
  refuse "this installs Debian packages with apt-get; elsewhere install the equivalents of: ${NEEDED[*]}"
fi

installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${NEEDED[@]}" 2>/dev/null || true)
missing=()
for package in "${NEEDED[@]}"; do
  grep -qx "$package installed" <<<"$installed" || missing+=("$package")
done
(( ${#missing[@]} == 0 )) && exit 0

for package in "${missing[@]}"; do
  echo "setup: installing $package"
done

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
apt_get() {
  # A background apt run (unattended-upgrades) holds the lock for a while; wait for it.
  if ! apt-get -q -y -o DPkg::Lock::Timeout=300 "$@" </dev/null >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: apt-get $1 failed" >&2
    exit 1
  fi
}
apt_get update
apt_get install --no-install-recommends "${missing[@]}"
