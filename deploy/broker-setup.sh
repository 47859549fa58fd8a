#!/usr/bin/env bash
# Accounts, ACL and (for trying TLS) certificates for the production broker.
#
#   deploy/broker-setup.sh init DIR [HOSTNAME]     CA + server certificate, empty password
#                                                  file, ACL and a mosquitto.conf in DIR
#   deploy/broker-setup.sh add-node DIR DEVICE_ID  an account for a camera node
#   deploy/broker-setup.sh add-worker DIR WORKER_ID
#   deploy/broker-setup.sh add-reader DIR NAME     an app that reads results, status, stats
#   deploy/broker-setup.sh add-operator DIR NAME   a reader that may also change settings
#
# The password of a new account is read from $ISPLITEE_NEW_PASSWORD, or generated and printed
# once on stdout; only its hash is stored. Give it to the node or worker as ISPLITEE_PASSWORD
# (never in a file others can read), with ISPLITEE_USERNAME and ISPLITEE_CA_FILE.
# The self-signed CA is for trying TLS; in production use your own PKI or Let's Encrypt.
set -euo pipefail

fail() { echo "broker-setup.sh: $*" >&2; exit 2; }
cmd="${1:-}"; dir="${2:-}"
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
case "$cmd" in -h|--help) usage; exit 0 ;; esac
[ -n "$cmd" ] && [ -n "$dir" ] || { usage; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

valid_id() {
  case "$1" in
    ""|*[!A-Za-z0-9_.-]*) fail "ids may hold letters, digits, '_', '.', '-' only: '$1'" ;;
  esac
  [ "${#1}" -le 64 ] || fail "ids are at most 64 characters: '$1'"
  # isplitee/workers/... holds the workers' status: a node by that id would write there.
  [ "$1" != workers ] || fail "'workers' is reserved (isplitee/workers/ holds the workers' status)"
}

# Append an ACL block for an account once: adding it again (a new password) keeps one block.
add_acl() {
  local name="$1" block="$2"
  if grep -qx "user $name" "$dir/acl"; then
    echo "the ACL already has a block for $name: kept as it is"
  else
    printf '\nuser %s\n%s' "$name" "$block" >>"$dir/acl"
  fi
}

new_password() {
  if [ -n "${ISPLITEE_NEW_PASSWORD:-}" ]; then
    printf '%s' "$ISPLITEE_NEW_PASSWORD"
  else
    openssl rand -base64 18 | tr -d '/+=\n'
  fi
}

add_account() {
  local name="$1" password
  [ -f "$dir/passwd" ] || fail "$dir is not set up: run init first"
  password="$(new_password)"
  mosquitto_passwd -b "$dir/passwd" "$name" "$password"
  chmod 0640 "$dir/passwd"
  [ -n "${ISPLITEE_NEW_PASSWORD:-}" ] || echo "password for $name: $password"
}

case "$cmd" in
  init)
    host="${3:-localhost}"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if [ ! -f "$dir/ca.crt" ]; then
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=isplitee test CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
      openssl req -newkey rsa:2048 -nodes -subj "/CN=$host" \
        -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
      printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n' "$host" >"$dir/san.ext"
      openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 825 -extfile "$dir/san.ext" -out "$dir/server.crt" 2>/dev/null
      rm -f "$dir/server.csr" "$dir/san.ext"
    fi
    touch "$dir/passwd"
    [ -f "$dir/acl" ] || cp "$here/broker_config/acl" "$dir/acl"
    sed -e "s|/etc/mosquitto/isplitee|$dir|g" -e "s|^persistence_location .*|persistence_location $dir/data/|" \
      "$here/broker_config/mosquitto.prod.conf" >"$dir/mosquitto.conf"
    mkdir -p "$dir/data"
    # Mosquitto started as root reads these, then drops to its own user to write its data.
    chmod 0644 "$dir/ca.crt" "$dir/server.crt" "$dir/acl" "$dir/mosquitto.conf"
    chmod 0640 "$dir/server.key" "$dir/passwd"
    chmod 0600 "$dir/ca.key"
    if id mosquitto >/dev/null 2>&1; then
      chgrp mosquitto "$dir/server.key" "$dir/passwd" 2>/dev/null || true
      chown mosquitto "$dir/data" 2>/dev/null || true
    fi
    echo "set up in $dir: mosquitto -c $dir/mosquitto.conf"
    ;;
  add-node)
    id_="${3:-}"; valid_id "$id_"
    # The ACL's patterns already confine a node to isplitee/<its id>/...
    add_account "$id_"
    ;;
  add-worker)
    id_="${3:-}"; valid_id "$id_"
    add_account "$id_"
    add_acl "$id_" "$(printf 'topic read isplitee/+/activation\ntopic write isplitee/+/reply\ntopic write isplitee/workers/%s/status\n' "$id_")
"
    ;;
  add-reader|add-operator)
    id_="${3:-}"; valid_id "$id_"
    add_account "$id_"
    rules='topic read isplitee/+/result
topic read isplitee/+/status
topic read isplitee/+/stats
topic read isplitee/+/config
topic read isplitee/workers/+/status
'
    [ "$cmd" = add-reader ] || rules="${rules}topic write isplitee/+/set/#
"
    add_acl "$id_" "$rules"
    ;;
  *) fail "unknown command '$cmd' (init, add-node, add-worker, add-reader, add-operator)" ;;
esac
