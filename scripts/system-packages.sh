#!/usr/bin/env bash
# Installs the host tools virtbus drives (qemu-img, qemu-storage-daemon,
# qemu-system-x86_64, dnsmasq, nft, ebtables, iptables, ip, udhcpc and busybox for
# the network tests; mkfs, parted and LVM for the fs, disk
# and logical pools; prometheus and promtool for deploy/prometheus) when missing.  Uses apt on a
# Debian-like machine when run as root; otherwise says what to install.
set -euo pipefail

declare -A pkg_for=(
    [qemu-img]=qemu-utils
    [qemu-storage-daemon]=qemu-system-common
    [qemu-system-x86_64]=qemu-system-x86
    [dnsmasq]=dnsmasq-base
    [nft]=nftables
    [ebtables]=ebtables
    [iptables]=iptables
    [ip6tables]=iptables
    [ip]=iproute2
    [udhcpc]=udhcpc
    [busybox]=busybox
    [mkfs.ext4]=e2fsprogs
    [parted]=parted
    [vgcreate]=lvm2
    [promtool]=prometheus
)
missing=()
for cmd in "${!pkg_for[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -x "/sbin/$cmd" ]; then
        missing+=("${pkg_for[$cmd]}")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "virtbus: missing system packages: ${missing[*]}" >&2
    echo "virtbus: install them as root (on Debian/Ubuntu: apt-get install ${missing[*]})" >&2
    exit 1
fi
echo "virtbus: installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" qemu-block-extra >/dev/null
