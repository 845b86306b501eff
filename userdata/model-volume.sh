#!/bin/bash
# Every start: mount the model volume, found by its EBS volume id (names like
# nvme1n1 are not stable, and on some GPU families that is an instance-store
# disk). Formats only a device on which blkid finds nothing at all, so models
# on an existing volume survive a new instance. Grows the filesystem, before
# mounting it, when the volume grew (modelVolumeGiB raised): nothing by hand.
# Container images are the other large thing a worker writes: containerd's root
# (k3s keeps it under its data dir) is bound onto the volume before k3s starts,
# so the root disk stays at the AMI's size and a new instance finds the images.
set -euo pipefail
readonly DEVICE="@@{device}" MOUNTPOINT="@@{mountpoint}" LABEL="@@{label}"
readonly IMAGES_DIR="@@{images_dir}" IMAGES_SUBDIR="@@{images_subdir}"
# The device is there at once on a restart (the attachment outlives a stop); only
# a first boot waits for the attachment, made after the instance runs.
readonly TIMEOUT=@@{timeout_seconds} POLL=0.2

until [[ -b $DEVICE ]]; do
  if ((SECONDS >= TIMEOUT)); then
    echo "model volume $DEVICE is not attached after ${TIMEOUT}s" >&2
    exit 1
  fi
  sleep "$POLL"
done

bind_images() {
  mkdir -p "$MOUNTPOINT/$IMAGES_SUBDIR" "$IMAGES_DIR"
  if ! mountpoint -q "$IMAGES_DIR"; then
    mount --bind "$MOUNTPOINT/$IMAGES_SUBDIR" "$IMAGES_DIR"
    echo "container images on $MOUNTPOINT/$IMAGES_SUBDIR" >&2
  fi
}

if mountpoint -q "$MOUNTPOINT"; then
  bind_images
  exit 0
fi

probe=0
found=$(blkid -p -o export "$DEVICE") || probe=$?
case $probe in
  0)
    fstype=$(sed -n 's/^TYPE=//p' <<<"$found")
    if [[ -z $fstype ]]; then
      echo "$DEVICE holds something other than a filesystem; not touching it" >&2
      exit 1
    fi
    ;;
  2)
    echo "$DEVICE is blank: creating an ext4 filesystem" >&2
    # -m 0: no blocks kept back for root; kubelet counts them as used.
    mkfs.ext4 -q -m 0 -L "$LABEL" "$DEVICE"
    fstype=ext4
    ;;
  *)
    echo "cannot probe $DEVICE (blkid exit $probe); not formatting" >&2
    exit 1
    ;;
esac
if [[ $fstype == ext4 ]]; then
  device_bytes=$(blockdev --getsize64 "$DEVICE")
  fs_bytes=$(dumpe2fs -h "$DEVICE" 2>/dev/null |
    awk -F: '/^Block count/ {count = $2} /^Block size/ {size = $2} END {printf "%.0f", count * size}')
  if ((device_bytes - fs_bytes > 8 * 1024 * 1024)); then
    echo "growing the filesystem on $DEVICE to ${device_bytes} bytes" >&2
    e2fsck -f -p "$DEVICE" >&2
    resize2fs "$DEVICE" >&2
  fi
fi
mkdir -p "$MOUNTPOINT"
mount -t "$fstype" -o noatime "$DEVICE" "$MOUNTPOINT"
echo "model volume mounted on $MOUNTPOINT ($fstype)" >&2
bind_images
