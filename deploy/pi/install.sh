#!/usr/bin/env bash
# Install an isplitee camera node on a Raspberry Pi (Raspberry Pi OS Bookworm, 64-bit).
#
#   sudo deploy/pi/install.sh --device-id cam1 --model models/digits.isplitee \
#        --broker mqtt://broker.lan:1883 [--config my-device.toml]
#
# Or from your workstation, over SSH (copies this checkout, then runs this script there):
#
#   rsync -a --exclude .venv --exclude runs ./ pi@camera1:isplitee/
#   ssh -t pi@camera1 sudo isplitee/deploy/pi/install.sh --device-id cam1 \
#        --model isplitee/models/digits.isplitee --broker mqtt://broker.lan:1883
#
# What it does, each step skipped when already done (run it again to upgrade):
#   1. apt: python3-venv, python3-picamera2 (the Pi camera; OpenCV cannot open it)
#   2. a system user `isplitee` (groups video, render)
#   3. a venv in /opt/isplitee/venv made with --system-site-packages, so apt's picamera2 is
#      visible in it, and this checkout installed there with the [device] extra (no torch:
#      the node runs the exported artefact on ONNX Runtime)
#   4. the artefact (isplitee export MODEL.pt writes it; isplitee train writes it beside the
#      checkpoint) to /var/lib/isplitee/models/, the config to /etc/isplitee/device-ID.toml
#      (an existing config is kept: your edits survive a re-run)
#   5. the systemd unit isplitee-device@.service, enabled and started as isplitee-device@ID
#
# --dry-run prints every command instead of running it. --prefix DIR installs under DIR as a
# fake root (no apt, no user, no systemctl): to inspect what would land where, or to build an
# image. PIP_ARGS adds pip options (e.g. "--find-links /media/usb/wheels" on a Pi offline).
set -euo pipefail

usage() {
  # The comment block under the shebang, and nothing after it.
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit "${1:-0}"
}

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PREFIX=""
DRY_RUN=0
DEVICE_ID=""
MODEL=""
BROKER=""
CONFIG=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device-id) DEVICE_ID="${2:?--device-id needs a value}"; shift 2 ;;
    --model) MODEL="${2:?--model needs a path}"; shift 2 ;;
    --broker) BROKER="${2:?--broker needs a URL}"; shift 2 ;;
    --config) CONFIG="${2:?--config needs a path}"; shift 2 ;;
    --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
    --source) SRC="${2:?--source needs the isplitee checkout}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

fail() { echo "install.sh: $*" >&2; exit 2; }
[ -n "$DEVICE_ID" ] || fail "--device-id is required (the camera's id in every MQTT topic)"
case "$DEVICE_ID" in
  *[!A-Za-z0-9_.-]*) fail "--device-id may hold letters, digits, '_', '.', '-' only: $DEVICE_ID" ;;
esac
[ -n "$MODEL" ] || fail "--model is required (the artefact, MODEL.isplitee, of the checkpoint the workers serve)"
[ -f "$MODEL" ] || fail "--model $MODEL: no such file"
case "$MODEL" in
  *.isplitee) ;;
  *) fail "--model $MODEL: give the deploy artefact (isplitee export $MODEL writes ${MODEL%.*}.isplitee); the [device] install has no torch to read a checkpoint" ;;
esac
[ -z "$CONFIG" ] || [ -f "$CONFIG" ] || fail "--config $CONFIG: no such file"
[ -f "$SRC/pyproject.toml" ] || fail "$SRC is not an isplitee checkout (use --source DIR)"
if [ -n "$PREFIX" ]; then
  PREFIX="$(mkdir -p "$PREFIX" && cd "$PREFIX" && pwd)"
elif [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
  fail "run as root (sudo), or try --dry-run / --prefix DIR"
fi

OPT="$PREFIX/opt/isplitee"
VENV="$OPT/venv"
ETC="$PREFIX/etc/isplitee"
LIB="$PREFIX/var/lib/isplitee"
UNIT_DIR="$PREFIX/etc/systemd/system"
MODEL_DEST="$LIB/models/$(basename "$MODEL")"
CONF_DEST="$ETC/device-$DEVICE_ID.toml"

run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}
say() { echo "==> $*"; }
# KEY = VALUE in a flat TOML file: replace the key's line (or its commented example), else append.
set_key() {
  local key="$1" value="$2" file="$3"
  if grep -q "^$key *=" "$file"; then
    sed -i "s|^$key *=.*|$key = $value|" "$file"
  elif grep -q "^# *$key *=" "$file"; then
    sed -i "0,/^# *$key *=.*/s||$key = $value|" "$file"
  else
    printf '%s = %s\n' "$key" "$value" >>"$file"
  fi
}

# 1. system packages (real installs only)
if [ -z "$PREFIX" ]; then
  if ! grep -qs 'bookworm' /etc/os-release; then
    echo "install.sh: warning: this is not Debian/Raspberry Pi OS Bookworm; continuing" >&2
  fi
  say "system packages"
  run apt-get update -qq
  run apt-get install -y -qq --no-install-recommends python3-venv python3-picamera2
  # 2. the service user
  if ! id isplitee >/dev/null 2>&1; then
    say "user isplitee"
    run useradd --system --home-dir /var/lib/isplitee --shell /usr/sbin/nologin \
      --groups video,render isplitee
  fi
fi

# 3. the venv and the package
say "venv $VENV (with system site packages, for picamera2)"
if [ ! -x "$VENV/bin/python" ]; then
  run mkdir -p "$OPT"
  run python3 -m venv --system-site-packages "$VENV"
fi
# shellcheck disable=SC2086 # PIP_ARGS is a list of options
run "$VENV/bin/python" -m pip install --quiet ${PIP_ARGS:-} "$SRC[device]"

# 4. model, config, state directory
say "model $MODEL_DEST, config $CONF_DEST"
run install -d -m 0755 "$ETC" "$LIB/models"
run install -m 0644 "$MODEL" "$MODEL_DEST"
if [ -e "$CONF_DEST" ]; then
  say "keeping the existing $CONF_DEST"
else
  TMP_CONF="$(mktemp)"
  trap 'rm -f "$TMP_CONF"' EXIT
  if [ -n "$CONFIG" ]; then
    cp "$CONFIG" "$TMP_CONF"
  else
    cp "$SRC/deploy/device.example.toml" "$TMP_CONF"
  fi
  set_key model "\"/var/lib/isplitee/models/$(basename "$MODEL")\"" "$TMP_CONF"
  [ -z "$BROKER" ] || set_key broker "\"$BROKER\"" "$TMP_CONF"
  run install -m 0640 "$TMP_CONF" "$CONF_DEST"
fi
if [ -z "$PREFIX" ]; then
  run chown -R isplitee:isplitee "$LIB"
  run chgrp isplitee "$CONF_DEST"
fi

# 5. systemd
say "systemd unit isplitee-device@$DEVICE_ID"
run install -d "$UNIT_DIR"
run install -m 0644 "$SRC/deploy/systemd/isplitee-device@.service" "$UNIT_DIR/"
if [ -z "$PREFIX" ]; then
  run systemctl daemon-reload
  run systemctl enable --now "isplitee-device@$DEVICE_ID"
  say "done: journalctl -u isplitee-device@$DEVICE_ID -f"
else
  say "done (fake root $PREFIX: nothing enabled)"
fi
