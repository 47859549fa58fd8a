#!/usr/bin/env bash
# Install an isplitee cloud worker as a systemd service (Debian 12 or Ubuntu 22.04 and newer),
# beside or away from the broker.
#
#   sudo deploy/server/install.sh --worker-id w1 --model models/digits.isplitee \
#        --broker mqtts://broker.lan:8883 [--config my-cloud.toml] \
#        [--username w1 --password-file w1.pw --ca-file ca.crt]
#
# What it does, each step skipped when already done (run it again to upgrade, or with another
# --worker-id for one more worker on this host):
#   1. apt: python3-venv
#   2. a system user `isplitee` (no login, home /var/lib/isplitee)
#   3. a venv in /opt/isplitee/venv with this checkout's [cloud] extra (no torch: the worker
#      runs the exported artefact on ONNX Runtime)
#   4. the artefact to /var/lib/isplitee/models/, the config to /etc/isplitee/cloud-ID.toml
#      (an existing config is kept unless --config replaces it, the old one kept as .bak;
#      the flags given update their keys), checked with the
#      worker's own --check-config before anything starts; --password-file: the password into
#      /etc/isplitee/ID.env (mode 0600, read by systemd as ISPLITEE_PASSWORD, never in the
#      config); --ca-file: the CA to /etc/isplitee/
#   5. the systemd unit isplitee-cloud@.service, enabled and started as isplitee-cloud@ID
#
# The broker's own files (certificates, accounts, ACL) come from deploy/broker-setup.sh, and
# its config from broker_config/mosquitto.prod.conf (see the README's deploy section).
# --dry-run prints every command instead of running it. --prefix DIR installs under DIR as a
# fake root (no apt, no user, no systemctl). PIP_ARGS adds pip options.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PROG=install.sh
# shellcheck source=../install-common.sh
. "$SRC/deploy/install-common.sh"
WORKER_ID=""
while [ $# -gt 0 ]; do
  case "$1" in
    --worker-id) need_value "$1" "${2-}"; WORKER_ID="$2"; shift 2 ;;
    *) common_option "$@"; shift "$SHIFT" ;;
  esac
done

check_id --worker-id "$WORKER_ID"
check_common "$WORKER_ID"
CONF_DEST="$ETC/cloud-$WORKER_ID.toml"
trap 'rm -f "${TMP_CONF:-}"' EXIT

# 1. system packages, 2. the service user (real installs only)
if [ -z "$PREFIX" ]; then
  say "system packages"
  run apt-get update -qq
  run apt-get install -y -qq --no-install-recommends python3-venv
  ensure_user
fi

# 3. the venv and the package
say "venv $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  run mkdir -p "$OPT"
  run python3 -m venv "$VENV"
fi
# shellcheck disable=SC2086 # PIP_ARGS is a list of options
run "$VENV/bin/python" -m pip install --quiet ${PIP_ARGS:-} "$SRC[cloud]"

# 4. the config, checked by the worker itself before anything else is installed
prepare_config "$CONF_DEST" "$CONFIG" "$SRC/deploy/cloud.example.toml"
set_key models "[\"/var/lib/isplitee/models/$(basename "$MODEL")\"]" "$TMP_CONF"
check_config isplitee-cloud --worker-id "$WORKER_ID" "$CONF_DEST"
say "model $MODEL_DEST, config $CONF_DEST"
run install -d -m 0755 "$ETC" "$LIB/models"
run install -m 0644 "$MODEL" "$MODEL_DEST"
install_config "$CONF_DEST"
# 5. systemd
install_unit isplitee-cloud "$WORKER_ID"
