#!/usr/bin/env bash
# Install an isplitee camera node on a Raspberry Pi (Raspberry Pi OS Bookworm, 64-bit).
#
#   sudo deploy/pi/install.sh --device-id cam1 --model models/digits.isplitee \
#        --broker mqtts://broker.lan:8883 [--config my-device.toml] \
#        [--username cam1 --password-file cam1.pw --ca-file ca.crt]
#
# Or from your workstation, over SSH (copies this checkout, then runs this script there):
#
#   rsync -a --exclude .venv --exclude runs ./ pi@camera1:isplitee/
#   ssh -t pi@camera1 sudo isplitee/deploy/pi/install.sh --device-id cam1 \
#        --model isplitee/models/digits.isplitee --broker mqtts://broker.lan:8883 \
#        --username cam1 --password-file cam1.pw --ca-file isplitee/ca.crt
#
# What it does, each step skipped when already done (run it again to upgrade):
#   1. apt: python3-venv, python3-picamera2 (the Pi camera; OpenCV cannot open it)
#   2. a system user `isplitee` (groups video, render)
#   3. a venv in /opt/isplitee/venv made with --system-site-packages, so apt's picamera2 is
#      visible in it, and this checkout installed there with the [device] extra (no torch:
#      the node runs the exported artefact on ONNX Runtime). pip keeps the system's numpy,
#      which python3-picamera2 is built against (a pip numpy 2 breaks it: "numpy.dtype size
#      changed"), and takes the OpenCV and ONNX Runtime wheels that work with it
#   4. the artefact (isplitee export MODEL.pt writes it; isplitee train writes it beside the
#      checkpoint) to /var/lib/isplitee/models/, the config to /etc/isplitee/device-ID.toml
#      (an existing config is kept, your edits survive a re-run, unless --config replaces
#      it, the old one kept as .bak; the flags given update their keys), checked with the node's own --check-config before anything starts
#      --password-file: the password into /etc/isplitee/ID.env (mode 0600, read by systemd
#      as ISPLITEE_PASSWORD, never in the config); --ca-file: the CA to /etc/isplitee/
#   5. the systemd unit isplitee-device@.service, enabled and started as isplitee-device@ID
#
# --dry-run prints every command instead of running it. --prefix DIR installs under DIR as a
# fake root (no apt, no user, no systemctl): to inspect what would land where, or to build an
# image. --source DIR installs from another checkout than this script's. PIP_ARGS adds pip
# options (e.g. "--find-links /media/usb/wheels" on a Pi offline).
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PROG=install.sh
# shellcheck source=../install-common.sh
. "$SRC/deploy/install-common.sh"
DEVICE_ID=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device-id) need_value "$1" "${2-}"; DEVICE_ID="$2"; shift 2 ;;
    --source) need_value "$1" "${2-}"; SRC="$2"; shift 2 ;;
    *) common_option "$@"; shift "$SHIFT" ;;
  esac
done

check_id --device-id "$DEVICE_ID"
check_common "$DEVICE_ID"
[ -f "$SRC/pyproject.toml" ] ||
  fail "--source $SRC is not an isplitee checkout (--source names the checkout to install from; the camera is the config's source key)"
CONF_DEST="$ETC/device-$DEVICE_ID.toml"
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS" "${TMP_CONF:-}"' EXIT

# 1. system packages (real installs only)
if [ -z "$PREFIX" ]; then
  if ! grep -qs 'bookworm' /etc/os-release; then
    echo "install.sh: warning: this is not Debian/Raspberry Pi OS Bookworm; continuing" >&2
  fi
  say "system packages"
  run apt-get update -qq
  run apt-get install -y -qq --no-install-recommends python3-venv python3-picamera2
  # 2. the service user
  ensure_user --groups video,render
fi

# 3. the venv and the package
say "venv $VENV (with system site packages, for picamera2)"
if [ ! -x "$VENV/bin/python" ]; then
  run mkdir -p "$OPT"
  run python3 -m venv --system-site-packages "$VENV"
fi
# python3-picamera2 (and simplejpeg, python3-av) are built against the system's numpy: pin it,
# so pip neither shadows it with numpy 2 nor picks an OpenCV that needs numpy 2.
if SYS_NUMPY="$(python3 -c 'import numpy; print(numpy.__version__)' 2>/dev/null)"; then
  say "keeping the system's numpy $SYS_NUMPY (what python3-picamera2 is built against)"
  echo "numpy==$SYS_NUMPY" >"$CONSTRAINTS"
fi
# shellcheck disable=SC2086 # PIP_ARGS is a list of options
run "$VENV/bin/python" -m pip install --quiet ${PIP_ARGS:-} -c "$CONSTRAINTS" "$SRC[device]"

# 4. the config, checked by the node itself before anything else is installed
prepare_config "$CONF_DEST" "$CONFIG" "$SRC/deploy/device.example.toml"
set_key model "\"/var/lib/isplitee/models/$(basename "$MODEL")\"" "$TMP_CONF"
check_config isplitee-device --device-id "$DEVICE_ID" "$CONF_DEST"
say "model $MODEL_DEST, config $CONF_DEST"
run install -d -m 0755 "$ETC" "$LIB/models"
run install -m 0644 "$MODEL" "$MODEL_DEST"
install_config "$CONF_DEST"
# 5. systemd
install_unit isplitee-device "$DEVICE_ID"
