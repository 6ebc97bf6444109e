#!/usr/bin/env bash
# `make images`: one image per service and for the QEMU agent, built with podman
# from a Debian base made by debootstrap; no container registry is needed.
#
#   localhost/virtbus/base:<version>       debootstrap minbase + python3 (bookworm)
#   localhost/virtbus/python:<version>     + /opt/venv with virtbus's Python dependencies
#   localhost/virtbus/<image>:<version>    + that service's tools, shared/ and its folder only
#
# Each service image holds shared/ and its own folder and nothing else of the
# repository (the vendoring rule), runs `python -m <module>`, and runs as
# non-root where the service allows it (secret: 65534, agent-qemu: 64055).
# Needs root, podman (runc) and debootstrap: `make images` installs them with apt.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
MIRROR=${VIRTBUS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=build/images
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/images/containers.conf}
PODMAN=(podman --runtime runc)
BUILD=("${PODMAN[@]}" build --network host --ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
mkdir -p "$WORK"

missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || [ -x /usr/sbin/runc ] || missing+=(runc)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
# podman kube play's pause container (the cluster test plays the secret Deployment).
[ -x /usr/bin/catatonit ] || [ -x /usr/libexec/podman/catatonit ] || missing+=(catatonit)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "images: install ${missing[*]} first (as root: apt-get install ${missing[*]})" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

have() { "${PODMAN[@]}" image exists "$1"; }

# 1. The base: debootstrap, imported as an image.
if ! have "localhost/virtbus/base:$VERSION"; then
    rootfs="$WORK/rootfs"
    if [ ! -f "$rootfs/.virtbus-complete" ]; then
        rm -rf --one-file-system "$rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$rootfs" "$MIRROR"
        touch "$rootfs/.virtbus-complete"
    fi
    # debootstrap can leave the kernel's file systems mounted in the tree.
    for fs in proc sys dev/pts dev; do
        mountpoint -q "$rootfs/$fs" && umount -l "$rootfs/$fs"
    done
    tar -C "$rootfs" --one-file-system --numeric-owner \
        --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* \
        --exclude=./var/cache/apt/archives/*.deb --exclude=./var/lib/apt/lists/* \
        --exclude=./.virtbus-complete -c . \
        | "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' - "localhost/virtbus/base:$VERSION"
fi

# 2. Python and virtbus's runtime dependencies (from pyproject.toml), as wheels
# fetched by this machine's pip (its index and proxy settings), installed in the
# image without network.
mapfile -t deps < <(python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml","rb"))["project"]["dependencies"]))')
rm -rf "$WORK/wheels" && mkdir -p "$WORK/wheels"
python3 -m pip download -q --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform linux_x86_64 \
    --implementation cp --dest "$WORK/wheels" "${deps[@]}"
cp deploy/images/python.Containerfile "$WORK/"
"${BUILD[@]}" -t "localhost/virtbus/python:$VERSION" --build-arg "VERSION=$VERSION" \
    --build-arg "DEPS=${deps[*]}" -f "$WORK/python.Containerfile" "$WORK"

# 3. One image per process.
while read -r image folder module packages user; do
    [ -d "$folder" ] || { echo "images: $folder missing, $image skipped"; continue; }
    ctx="$WORK/ctx-$image"
    rm -rf "$ctx" && mkdir -p "$ctx/$(dirname "$folder")"
    cp -a shared "$ctx/shared"
    cp -a "$folder" "$ctx/$folder"
    find "$ctx" -name __pycache__ -prune -exec rm -rf {} +
    "${BUILD[@]}" -t "localhost/virtbus/$image:$VERSION" \
        --label "virtbus.source=$(python3 deploy/images/source_hash.py . "$folder")" \
        --build-arg "VERSION=$VERSION" --build-arg "FOLDER=$folder" \
        --build-arg "MODULE=$module" --build-arg "PACKAGES=${packages//,/ }" \
        --build-arg "RUNAS=$user" -f deploy/images/service.Containerfile "$ctx" </dev/null
    rm -rf "$ctx"
done <<'LIST'
secret      services/secret   services.secret   -                                                        65534
storage     services/storage  services.storage  qemu-utils,qemu-block-extra,lvm2,parted,e2fsprogs,nfs-common,open-iscsi,util-linux  0
network     services/network  services.network  dnsmasq-base,nftables,iptables,iproute2                  0
nwfilter    services/nwfilter services.nwfilter nftables,iptables,ebtables                               0
agent-qemu  agents/qemu       agents.qemu       -                                                        64055
LIST
# Each image holds shared/ and its own folder only, and runs as the user it should.
for image in secret storage network nwfilter agent-qemu; do
    have "localhost/virtbus/$image:$VERSION" || continue
    user=$("${PODMAN[@]}" image inspect --format '{{.Config.User}}' "localhost/virtbus/$image:$VERSION")
    tree=$("${PODMAN[@]}" run --rm --network host --entrypoint /bin/sh "localhost/virtbus/$image:$VERSION" \
        -c 'cd /app && find . -mindepth 1 -maxdepth 2 -type d ! -path "./shared/*" | sort | tr "\n" " "' </dev/null)
    echo "images: $image user=$user /app: $tree"
done
"${PODMAN[@]}" images --filter "reference=localhost/virtbus/*" --format '{{.Repository}}:{{.Tag}} {{.Size}}'
