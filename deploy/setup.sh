#!/usr/bin/env bash
# Installs what ironboot needs from a fresh checkout; safe to run again (it only does what is missing).
#   deploy/setup.sh          the daemon: npm packages; as root also Debian packages (iPXE, kernel, busybox, zstd, …)
#   deploy/setup.sh --test   also what the test suite needs (QEMU, OVMF, DHCP/TFTP clients, reference servers, the iPXE build)
#   IRONBOOT_IPXE_BUILD=1 deploy/setup.sh   also what `ironboot artifacts ipxe` needs
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

say() { printf 'setup: %s\n' "$*" >&2; }

# Debian packages. The daemon: iPXE binaries, the kernel it boots machines with, and what the initramfs and the
# container-disk builder are made of.
DEB_SERVE=(ipxe linux-image-amd64 busybox-static zstd lz4 e2fsprogs kmod cpio iproute2 binutils util-linux python3 isal libisal-dev libzstd-dev
  grub-common grub-pc-bin grub-efi-amd64-bin dosfstools mtools fdisk)
# `ironboot artifacts ipxe` (iPXE with HTTPS and the operator's CA, from Debian's source package): the build tools.
# Installed with --test (test/e2e/lab-ipxe-tls.test.ts builds it) or IRONBOOT_IPXE_BUILD=1; keep in step with
# IPXE_BUILD_DEPENDS in server/boot/ipxe-build.ts.
DEB_IPXE=(gcc binutils make perl liblzma-dev dpkg-dev xz-utils openssl)
# The tests: real peers and the QEMU lab.
DEB_TEST=(qemu-system-x86 qemu-utils ipxe-qemu ovmf udhcpc isc-dhcp-client isc-dhcp-relay tftp-hpa atftp curl
  dnsmasq-base docker-registry systemd iproute2 python3 nftables util-linux openssl libcap2-bin chromium
  openipmi ipmitool fdisk mount strace umoci gdisk debootstrap postgresql)
# Benchmarks only (npm run bench).
DEB_BENCH=(kea-admin nginx-light debootstrap tftpd-hpa)

missing_debs() {
  local p out=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || out+=("$p")
  done
  echo "${out[@]:-}"
}

install_debs() {
  local missing
  missing=$(missing_debs "$@")
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    say "not root: cannot install Debian packages: $missing (run as root, or apt-get install them)"
    return 0
  fi
  say "installing Debian packages: $missing"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d: installing a server package (tftpd-hpa, nginx) must not start it on the host's interfaces
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created=1; fi
  apt-get update -qq >/dev/null 2>&1 || apt-get update
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 || apt-get install -y --no-install-recommends $missing
  [ $created = 1 ] && rm -f "$policy"
  return 0
}

pkgs=("${DEB_SERVE[@]}")
[ $want_test = 1 ] && pkgs+=("${DEB_TEST[@]}" "${DEB_IPXE[@]}")
[ "${IRONBOOT_IPXE_BUILD:-0}" = 1 ] && pkgs+=("${DEB_IPXE[@]}")
[ "${IRONBOOT_BENCH:-0}" = 1 ] && pkgs+=("${DEB_BENCH[@]}")
install_debs "${pkgs[@]}"

# npm packages: exactly the lock file, again only when it changed.
stamp=node_modules/.ironboot-lock.sha256
sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ]; then
  say "installing npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$sum" > "$stamp"
fi

# The native addons (DHCP: SO_BINDTODEVICE; TFTP: the transfer loop; images: in-process gzip/zstd), built against this node's headers.
if [ -f deploy/build-native.sh ]; then
  bash deploy/build-native.sh >&2 || say "a native addon could not be built (as root, setup installs what they need); ironboot says at start what that disables"
fi

# The `ironboot` command on PATH when we may put it there.
if [ "$(id -u)" = 0 ] && [ -d /usr/local/bin ] && [ ! -e /usr/local/bin/ironboot ]; then
  ln -s "$PWD/server/cli/ironboot.mjs" /usr/local/bin/ironboot && say "linked /usr/local/bin/ironboot"
fi
exit 0
