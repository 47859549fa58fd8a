#!/usr/bin/env bash
# Accounts, ACL and (for trying TLS) certificates for the production broker.
#
#   deploy/broker-setup.sh init DIR [HOSTNAME]     CA + server certificate, empty password
#                                                  file, ACL, isplitee.conf (for Debian's
#                                                  /etc/mosquitto/conf.d/) and a stand-alone
#                                                  mosquitto.conf in DIR
#   deploy/broker-setup.sh add-node DIR DEVICE_ID  an account for a camera node
#   deploy/broker-setup.sh add-worker DIR WORKER_ID
#   deploy/broker-setup.sh add-reader DIR NAME     an app that reads results, status, stats
#   deploy/broker-setup.sh add-operator DIR NAME   a reader that may also change settings
#   deploy/broker-setup.sh add-homeassistant DIR NAME
#                                                  Home Assistant: reads the nodes' discovery
#                                                  configs and what their entities show, sets
#                                                  alpha, publishes its own birth message
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
    # isplitee.conf: the fragment for /etc/mosquitto/conf.d/ beside Debian's own main file;
    # mosquitto.conf: the same settings standing alone, for trying them (mosquitto -c).
    sed -e "s|/etc/mosquitto/isplitee|$dir|g" "$here/broker_config/mosquitto.prod.conf" >"$dir/isplitee.conf"
    { cat "$dir/isplitee.conf"; printf '\npersistence_location %s/data/\n' "$dir"; } >"$dir/mosquitto.conf"
    mkdir -p "$dir/data"
    # Mosquitto started as root reads these, then drops to its own user to write its data.
    chmod 0644 "$dir/ca.crt" "$dir/server.crt" "$dir/acl" "$dir/mosquitto.conf" "$dir/isplitee.conf"
    chmod 0640 "$dir/server.key" "$dir/passwd"
    chmod 0600 "$dir/ca.key"
    if id mosquitto >/dev/null 2>&1; then
      chgrp mosquitto "$dir/server.key" "$dir/passwd" 2>/dev/null || true
      chown mosquitto "$dir/data" 2>/dev/null || true
    fi
    echo "set up in $dir: try it with mosquitto -c $dir/mosquitto.conf;"
    echo "on Debian: cp $dir/isplitee.conf /etc/mosquitto/conf.d/ && systemctl restart mosquitto"
    ;;
  add-node)
    id_="${3:-}"; valid_id "$id_"
    # The ACL's patterns already confine a node to isplitee/<its id>/... and its own Home
    # Assistant configs; those name the node with '.' written '_', which %u cannot match.
    add_account "$id_"
    case "$id_" in
      *.*) add_acl "$id_" "topic write homeassistant/+/isplitee_${id_//./_}/+/config
" ;;
    esac
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
  add-homeassistant)
    id_="${3:-}"; valid_id "$id_"
    add_account "$id_"
    # Discovery (retained configs) and HA's birth/will on homeassistant/status; the entities
    # read results, status, stats and config; the alpha number writes set/alpha.
    add_acl "$id_" 'topic read homeassistant/#
topic write homeassistant/status
topic read isplitee/+/result
topic read isplitee/+/status
topic read isplitee/+/stats
topic read isplitee/+/config
topic write isplitee/+/set/#
'
    ;;
  *) fail "unknown command '$cmd' (init, add-node, add-worker, add-reader, add-operator, add-homeassistant)" ;;
esac
