#!/usr/bin/env bash
# Builds the tiny QEMU guest the `qemu` driver boots (seed 004): Debian's kernel taken from the
# linux-image package (apt-get download + dpkg-deb -x, never installed) and a busybox initramfs
# whose /init prints TRUSTPLANE-GUEST-READY on the serial console. Idempotent: skips when built.
#
# Output (TRUSTPLANE_GUEST_DIR, default ./.trustplane/guest): vmlinuz, initramfs.cpio.gz, manifest.
# Guest kernel cmdline flags read by /init:
#   trustplane.metadata=<path>  fetch http://169.254.169.254<path> (Metadata-Flavor: Google) once
#                               the network is up; print "TRUSTPLANE-METADATA <http status> <body>"
#   trustplane.net=0            skip eth0/udhcpc (faster boot when no network is needed)
set -euo pipefail

GUEST_VERSION=8 # bump when /init or the module list changes, so caches rebuild
OUT="${TRUSTPLANE_GUEST_DIR:-$PWD/.trustplane/guest}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

if [[ -f "$OUT/manifest" && -f "$OUT/vmlinuz" && -f "$OUT/initramfs.cpio.gz" ]] && grep -qx "guest_version=$GUEST_VERSION" "$OUT/manifest"; then
  echo "guest already built in $OUT ($(grep '^kernel=' "$OUT/manifest"))"
  exit 0
fi

need() { command -v "$1" >/dev/null 2>&1; }
if ! need busybox || ! need dpkg-deb || ! need apt-get; then
  echo "build-guest: needs apt-get, dpkg-deb and busybox (apt-get install -y busybox-static)" >&2
  exit 1
fi
BUSYBOX="$(command -v busybox)"
LDD="$(ldd "$BUSYBOX" 2>&1 || true)"
if [[ "$LDD" != *"not a dynamic"* && "$LDD" != *"statically linked"* ]]; then
  echo "build-guest: $BUSYBOX is not static; install busybox-static" >&2
  exit 1
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tp-guest.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# linux-image-amd64 is a metapackage: resolve it to the versioned package holding the kernel.
KPKG="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
if [[ -z "$KPKG" ]]; then
  echo "build-guest: cannot resolve linux-image-amd64 (run apt-get update)" >&2
  exit 1
fi
echo "build-guest: downloading $KPKG"
(cd "$WORK" && apt-get download -q "$KPKG" >/dev/null)
dpkg-deb -x "$WORK"/linux-image-*.deb "$WORK/pkg"
KVER="$(ls "$WORK/pkg/lib/modules" | head -n1)"
MODDIR="$WORK/pkg/lib/modules/$KVER"

ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,sbin,etc,proc,sys,dev,tmp,run,mnt,lib/modules,usr/bin,usr/sbin,var/run}
cp "$BUSYBOX" "$ROOT/bin/busybox"
# Relative links: `busybox --install -s` would point them at this build directory.
for applet in $("$BUSYBOX" --list); do
  [[ "$applet" == busybox ]] || ln -sf busybox "$ROOT/bin/$applet"
done

# Debian builds virtio and the ACPI button as modules, and the package ships no modules.dep
# (depmod runs at install): read each module's depends= from its .modinfo and load deps first.
declare -A SEEN=()
ORDER=()
add_module() {
  local name="$1" file deps dep
  file="$(find "$MODDIR/kernel" -name "${name}.ko*" | head -n1)"
  if [[ -z "$file" ]]; then
    file="$(find "$MODDIR/kernel" -name "${name//_/-}.ko*" | head -n1)"
  fi
  if [[ -z "$file" ]]; then
    grep -qE "/${name}\.ko" "$MODDIR/modules.builtin" 2>/dev/null && return 0
    echo "build-guest: module $name is neither in the package nor built in" >&2
    exit 1
  fi
  [[ -n "${SEEN[$file]:-}" ]] && return 0
  SEEN[$file]=1
  deps="$(grep -a -o 'depends=[a-z0-9_,-]*' "$file" | head -n1 | cut -d= -f2)"
  for dep in ${deps//,/ }; do add_module "$dep"; done
  ORDER+=("${file#"$MODDIR/"}")
}
for m in virtio virtio_ring virtio_pci virtio_blk virtio_net evdev button; do add_module "$m"; done
: >"$ROOT/etc/modules.order"
for rel in "${ORDER[@]}"; do
  base="$(basename "$rel")"
  case "$base" in
    *.ko.xz) xz -dc "$MODDIR/$rel" >"$ROOT/lib/modules/${base%.xz}" ;;
    *.ko.zst) zstd -qdc "$MODDIR/$rel" >"$ROOT/lib/modules/${base%.zst}" ;;
    *.ko.gz) gzip -dc "$MODDIR/$rel" >"$ROOT/lib/modules/${base%.gz}" ;;
    *) cp "$MODDIR/$rel" "$ROOT/lib/modules/$base" ;;
  esac
  echo "${base%.ko*}.ko" >>"$ROOT/etc/modules.order"
done

cat >"$ROOT/etc/udhcpc.script" <<'EOF'
#!/bin/sh
# udhcpc hook: apply the lease slirp hands out (10.0.2.15, router 10.0.2.2).
case "$1" in
  bound|renew)
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
    [ -n "$router" ] && route add default gw "${router%% *}" dev "$interface"
    echo "TRUSTPLANE-NET $interface $ip" >/dev/console
    ;;
esac
exit 0
EOF
chmod 755 "$ROOT/etc/udhcpc.script"

cat >"$ROOT/init" <<'EOF'
#!/bin/sh
# Trustplane tiny guest init: mounts, loads virtio, reports readiness and block devices.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done </etc/modules.order
hostname trustplane-guest
# ACPI powerdown (QMP system_powerdown) is a press of the ACPI power button, which evdev
# exposes as an input device: any event on it powers the guest off (busybox acpid proved
# unreliable here, and this needs no configuration).
for ev in /sys/class/input/event*; do
  if grep -q "Power Button" "$ev/device/name" 2>/dev/null; then
    ( head -c 1 "/dev/input/${ev##*/}" >/dev/null; echo "TRUSTPLANE-GUEST-POWEROFF"; sync; poweroff -f ) &
  fi
done
arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1"=*) echo "${w#*=}";; esac; done; }
blocks() { ls /sys/block | grep -v -E '^(loop|ram)' | tr '\n' ' '; }
echo "TRUSTPLANE-GUEST-READY kernel=$(uname -r)"
echo "TRUSTPLANE-BLOCK: $(blocks)"
# Block devices: print the /sys/block listing whenever it changes (hotplug add or remove).
(
  last="$(blocks)"
  while :; do
    sleep 1
    now="$(blocks)"
    if [ "$now" != "$last" ]; then echo "TRUSTPLANE-BLOCK: $now"; last="$now"; fi
  done
) &
if [ "$(arg trustplane.net)" != "0" ] && [ -e /sys/class/net/eth0 ]; then
  ifconfig lo up
  ifconfig eth0 up
  udhcpc -q -n -t 5 -T 1 -i eth0 -s /etc/udhcpc.script >/dev/null 2>&1 || echo "TRUSTPLANE-NET eth0 no-lease"
  path="$(arg trustplane.metadata)"
  if [ -n "$path" ]; then
    # busybox nc rather than wget: this busybox's wget crashes with --header.
    resp="$(printf 'GET %s HTTP/1.0\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\n\r\n' "$path" | nc -w 10 169.254.169.254 80 2>&1)"
    status="$(echo "$resp" | head -n1 | cut -d' ' -f2)"
    body="$(echo "$resp" | sed '1,/^\r*$/d')"
    echo "TRUSTPLANE-METADATA ${status:-none} $(echo "$body" | head -c 300)"
  fi
fi
while :; do sleep 3600; done
EOF
chmod 755 "$ROOT/init"

(cd "$ROOT" && find . | "$BUSYBOX" cpio -o -H newc 2>/dev/null | gzip -6) >"$WORK/initramfs.cpio.gz"
cp "$WORK/pkg/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
# Atomic replace: a reader never sees a half-written guest.
mv "$WORK/vmlinuz" "$OUT/vmlinuz"
mv "$WORK/initramfs.cpio.gz" "$OUT/initramfs.cpio.gz"
printf 'guest_version=%s\nkernel=%s\npackage=%s\nmodules=%s\n' "$GUEST_VERSION" "$KVER" "$KPKG" "$(tr '\n' ' ' <"$ROOT/etc/modules.order")" >"$OUT/manifest.tmp"
mv "$OUT/manifest.tmp" "$OUT/manifest"
echo "build-guest: built $OUT (kernel $KVER)"
