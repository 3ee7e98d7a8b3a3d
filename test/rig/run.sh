#!/usr/bin/env bash
# The soft-RoCE rig: two qemu VMs (TCG, one vCPU each) running Debian's stock kernel with
# rdma_rxe, joined by a qemu datagram link on 127.0.0.1. One serves a store over the verbs
# transport, the other runs the conformance checks and the read benchmark across the link,
# next to perftest's ib_read_lat/ib_read_bw in the same VMs. Everything comes from Debian
# packages (downloaded once into target/rig/, git-ignored). Writes target/rig/results.json;
# exits non-zero on any failure. Every wait is bounded; the VMs are killed on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RIG="$ROOT/target/rig"
HERE="$ROOT/test/rig"
VM_TIMEOUT=${REMORA_RIG_TIMEOUT:-900}
mkdir -p "$RIG/debs"
log() { echo "rig: $*" >&2; }

# ---- host tools ----
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v depmod >/dev/null || need+=(kmod)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing host packages: ${need[*]} (apt-get install -y ${need[*]})"
    exit 1
  fi
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
BUSYBOX=$(command -v busybox)

# ---- our binaries ----
log "building verbs_rig and the conformance suite"
(cd "$ROOT" && cargo build --release -q -p remora-core --example verbs_rig)
CONFORMANCE=$(cd "$ROOT" && cargo test --release -q -p remora-core --test conformance --no-run \
  --message-format=json | node -e '
    let exe = "";
    for (const l of require("fs").readFileSync(0, "utf8").split("\n")) {
      try { const m = JSON.parse(l); if (m.executable && m.target.name === "conformance") exe = m.executable; } catch {}
    }
    if (!exe) process.exit(1);
    console.log(exe);')
VERBS_RIG="$ROOT/target/release/examples/verbs_rig"
# Heron state transfer over verbs (remora-heron's transfer tests; the rig runs the verbs one).
HERON_TRANSFER=$(cd "$ROOT" && cargo test --release -q -p remora-heron --test transfer --no-run \
  --message-format=json | node -e '
    let exe = "";
    for (const l of require("fs").readFileSync(0, "utf8").split("\n")) {
      try { const m = JSON.parse(l); if (m.executable && m.target.name === "transfer") exe = m.executable; } catch {}
    }
    if (!exe) process.exit(1);
    console.log(exe);')

# ---- guest packages (cached) ----
cd "$RIG/debs"
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$KPKG" ]; then
  apt-get update -qq
  KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
fi
# The guest's kernel and RDMA userspace; other libraries come from the host (same release).
PKGS=("$KPKG" ibverbs-providers libibverbs1 librdmacm1 perftest iproute2 libnl-3-200 libnl-route-3-200 libmnl0 libelf1 libbpf1 libcap2 libpci3)
for p in "${PKGS[@]}"; do
  ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download "$p" >/dev/null 2>&1 || {
    apt-get update -qq && apt-get download "$p" >/dev/null
  }
done
if [ ! -f "$RIG/extracted.stamp" ] || [ "$(cat "$RIG/extracted.stamp")" != "${PKGS[*]}" ]; then
  rm -rf "$RIG/x"
  mkdir -p "$RIG/x"
  for p in "${PKGS[@]}"; do dpkg -x "$(ls "${p}"_*.deb | head -n1)" "$RIG/x"; done
  echo "${PKGS[*]}" >"$RIG/extracted.stamp"
fi
X="$RIG/x"
KVER=$(ls "$X/lib/modules" | head -n1)
KERNEL="$X/boot/vmlinuz-$KVER"

# ---- initramfs ----
log "building the initramfs (kernel $KVER)"
I="$RIG/initramfs"
rm -rf "$I"
mkdir -p "$I"/{bin,sbin,lib,usr/bin,usr/sbin,usr/lib/x86_64-linux-gnu,lib64,proc,sys,dev,tmp,modules,etc/libibverbs.d}
ln -s ../usr/lib/x86_64-linux-gnu "$I/lib/x86_64-linux-gnu"
cp "$BUSYBOX" "$I/bin/busybox"
cp "$HERE/init.sh" "$I/init"
chmod +x "$I/init"
depmod -b "$X" "$KVER"
# Modules in load order: what rdma_rxe and virtio_net need, crc32_generic before rxe.
for m in virtio_pci virtio_net crc32_generic rdma_rxe; do
  modprobe -d "$X" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' >"$RIG/modules.list"
: >"$I/modules/order"
while read -r ko; do
  name=$(basename "$ko" .ko)
  cp "$ko" "$I/modules/$name.ko"
  echo "$name" >>"$I/modules/order"
done <"$RIG/modules.list"
echo "driver rxe" >"$I/etc/libibverbs.d/rxe.driver"

# Userspace: binaries and every library they (and the rxe provider) link, from the guest's
# packages first, then the host's (same Debian release: libc and friends).
GUEST_LIBS="$X/usr/lib/x86_64-linux-gnu:$X/lib/x86_64-linux-gnu"
copy_with_libs() { # file dest-dir
  install -D -m 0755 "$1" "$I/$2/$(basename "$1")"
  if LD_LIBRARY_PATH="$GUEST_LIBS" ldd "$1" 2>/dev/null | grep -q "not found"; then
    log "$(basename "$1"): a library is missing: add its package to PKGS"
    LD_LIBRARY_PATH="$GUEST_LIBS" ldd "$1" | grep "not found" >&2
    exit 1
  fi
  LD_LIBRARY_PATH="$GUEST_LIBS" ldd "$1" 2>/dev/null | awk '/=> \//{print $3} /^\t\/lib64/{print $1}' |
    while read -r lib; do
      real=$lib
      base=$(basename "$lib")
      [ -e "$X/usr/lib/x86_64-linux-gnu/$base" ] && real="$X/usr/lib/x86_64-linux-gnu/$base"
      case "$lib" in
        /lib64/*) dest="$I/lib64/$base" ;;
        *) dest="$I/usr/lib/x86_64-linux-gnu/$base" ;;
      esac
      [ -e "$dest" ] || install -D -m 0755 "$(readlink -f "$real")" "$dest"
    done
}
copy_with_libs "$X/usr/bin/ib_read_lat" usr/bin
copy_with_libs "$X/usr/bin/ib_read_bw" usr/bin
copy_with_libs "$X/usr/bin/rdma" usr/bin
copy_with_libs "$VERBS_RIG" usr/bin
copy_with_libs "$CONFORMANCE" usr/bin
mv "$I/usr/bin/$(basename "$CONFORMANCE")" "$I/usr/bin/conformance"
copy_with_libs "$HERON_TRANSFER" usr/bin
mv "$I/usr/bin/$(basename "$HERON_TRANSFER")" "$I/usr/bin/heron-transfer"
copy_with_libs "$X/usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so" usr/lib/x86_64-linux-gnu/libibverbs
copy_with_libs "$X/usr/lib/x86_64-linux-gnu/libibverbs.so.1" usr/lib/x86_64-linux-gnu
(cd "$I" && find . | cpio -o -H newc --quiet | gzip -1) >"$RIG/initramfs.cpio.gz"
log "initramfs $(du -h "$RIG/initramfs.cpio.gz" | cut -f1)"

# ---- two VMs ----
SECRET="rig-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
BASE=$((20000 + RANDOM % 20000))
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM
boot() { # role ip peer mac local-port remote-port
  timeout "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 1 -m 1G \
    -nodefaults -no-reboot -display none -serial stdio \
    -kernel "$KERNEL" -initrd "$RIG/initramfs.cpio.gz" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 rig.role=$1 rig.ip=$2 rig.peer=$3 rig.secret=$SECRET rig.perftest=${REMORA_RIG_PERFTEST:-1}" \
    -netdev "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=$5,remote.type=inet,remote.host=127.0.0.1,remote.port=$6" \
    -device "virtio-net-pci,netdev=n0,mac=$4" </dev/null >"$RIG/$1.log" 2>&1 &
  PIDS+=($!)
}
log "booting server and client VMs (logs: target/rig/server.log, target/rig/client.log)"
started=$(date +%s)
boot server 10.77.0.1 10.77.0.2 52:54:00:77:00:01 "$BASE" $((BASE + 1))
boot client 10.77.0.2 10.77.0.1 52:54:00:77:00:02 $((BASE + 1)) "$BASE"
client_rc=0
wait "${PIDS[1]}" || client_rc=$?
# The server powers off once the client has told it it is done; give it a moment, bounded.
for _ in $(seq 1 60); do kill -0 "${PIDS[0]}" 2>/dev/null || break; sleep 0.5; done
kill "${PIDS[0]}" 2>/dev/null || true
wait "${PIDS[0]}" 2>/dev/null || true
log "VMs done in $(($(date +%s) - started)) s (client qemu exit $client_rc)"
grep -h "^RIG" "$RIG/server.log" "$RIG/client.log" | grep -v "^RIG-RESULT" >&2 || true
node "$HERE/results.mjs" "$RIG/server.log" "$RIG/client.log" "$RIG/results.json"
