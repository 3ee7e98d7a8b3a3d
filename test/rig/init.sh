#!/bin/busybox sh
# /init of a rig VM. The kernel command line says which side this is (rig.role=server|client),
# its address and its peer's. Everything the host needs is printed on the serial console as
# lines starting with "RIG".
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin:/usr/sbin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp && mount -t tmpfs tmpfs /tmp

arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^rig\.$1=//p"; }
ROLE=$(arg role)
IP=$(arg ip)
PEER=$(arg peer)
SECRET=$(arg secret)
PERFTEST=$(arg perftest)
say() { echo "RIG $ROLE: $*"; }
die() { echo "RIG-FAIL $ROLE: $*"; dmesg | tail -n 20; counters; poweroff -f; }

counters() {
  # Proof that RDMA crossed the link: rxe's packet counters next to eth0's.
  hw=/sys/class/infiniband/rxe0/ports/1/hw_counters
  line="RIG-COUNTERS $ROLE {"
  for f in sent_pkts rcvd_pkts rdma_sends rdma_recvs completer_retry_err send_err; do
    [ -r "$hw/$f" ] && line="$line\"rxe_$f\":$(cat "$hw/$f"),"
  done
  for f in tx_packets rx_packets tx_bytes rx_bytes; do
    line="$line\"eth0_$f\":$(cat /sys/class/net/eth0/statistics/$f),"
  done
  echo "${line%,}}"
}

# Module order from `modprobe --show-depends` (see run.sh); rxe needs crc32 loaded first.
while read -r m; do
  insmod "/modules/$m.ko" || die "insmod $m"
done </modules/order

ip link set lo up
ip link set eth0 up
ip addr add "$IP/24" dev eth0 || die "address"
rdma link add rxe0 type rxe netdev eth0 || die "rdma link add"
say "rxe0 up on eth0 $IP, peer $PEER"

# ARP first, so the first RDMA packets are not lost to address resolution.
for i in $(seq 1 100); do ping -c 1 -W 1 "$PEER" >/dev/null 2>&1 && break; done
ping -c 1 -W 1 "$PEER" >/dev/null 2>&1 || die "peer $PEER unreachable"

PERF="-d rxe0 -i 1 -x 1 -F"
SIZES="64 1024 4096"

# Retries a client command until its server listens (bounded).
retry() {
  for i in $(seq 1 60); do
    "$@" && return 0
    sleep 0.5
  done
  return 1
}

[ "$PERFTEST" = 0 ] && SIZES=""
if [ "$ROLE" = server ]; then
  for s in $SIZES; do
    timeout 120 ib_read_lat $PERF -s "$s" -n 1000 >/dev/null 2>&1 || say "ib_read_lat server $s failed"
  done
  [ "$PERFTEST" = 0 ] || timeout 120 ib_read_bw $PERF -s 4096 -n 2000 >/dev/null 2>&1 || say "ib_read_bw server failed"
  verbs_rig serve --listen "$IP:7471" --secret "$SECRET" &
  # The client says when it is done; then report and stop (the host bounds all of this).
  timeout 600 nc -l -p 7400 </dev/null
  dmesg | grep -i -E "rxe|umem|rdma" | tail -n 20
  counters
  say "done"
  poweroff -f
fi

rc=0
for s in $SIZES; do
  echo "RIG-PERFTEST ib_read_lat $s"
  retry timeout 120 ib_read_lat $PERF -s "$s" -n 1000 "$PEER" || { say "ib_read_lat $s failed"; rc=1; }
done
[ "$PERFTEST" = 0 ] || echo "RIG-PERFTEST ib_read_bw 4096"
[ "$PERFTEST" = 0 ] || retry timeout 120 ib_read_bw $PERF -s 4096 -n 2000 "$PEER" || { say "ib_read_bw failed"; rc=1; }
echo "RIG-PERFTEST end"
counters
timeout 300 verbs_rig check --peer "$PEER:7471" --secret "$SECRET" || { echo "RIG-FAIL check"; rc=1; }
timeout 300 verbs_rig bench --peer "$PEER:7471" --secret "$SECRET" --iters 1000 || { echo "RIG-FAIL bench"; rc=1; }
counters
dmesg | grep -i -E "rxe|umem|rdma" | tail -n 20
echo done | nc "$PEER" 7400
# The conformance suite itself, on this VM's rxe0 (loopback: both ends here).
REMORA_REQUIRE_RDMA=1 timeout 600 conformance --test-threads 1 verbs \
  && echo "RIG-CONFORMANCE ok" || { echo "RIG-FAIL conformance"; rc=1; }
# Heron state transfer to an empty replica over verbs, on the same rxe0.
REMORA_REQUIRE_RDMA=1 timeout 600 heron-transfer --test-threads 1 over_verbs \
  && echo "RIG-HERON-TRANSFER ok" || { echo "RIG-FAIL heron-transfer"; rc=1; }
echo "RIG-DONE rc=$rc"
poweroff -f
