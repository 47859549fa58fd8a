#!/usr/bin/env bash
# Accounts, ACL and (for trying TLS) certificates for the production broker.
#
#   deploy/broker-setup.sh init DIR [HOSTNAME]     CA + server certificate, empty password
#                                                  file, ACL, isplitee.conf (for Debian's
#                                                  /etc/mosquitto/conf.d/) and a stand-alone
#                                                  mosquitto.conf in DIR
#   deploy/broker-setup.sh cert DIR HOSTNAME       a new server certificate for another host
#                                                  name or IP address (the CA is kept)
#   deploy/broker-setup.sh add-node DIR DEVICE_ID  an account for a camera node
#   deploy/broker-setup.sh add-worker DIR WORKER_ID
#   deploy/broker-setup.sh add-reader DIR NAME     an app that reads results, state, events,
#                                                  snapshots, status, stats
#   deploy/broker-setup.sh add-operator DIR NAME   a reader that may also change settings
#   deploy/broker-setup.sh add-homeassistant DIR NAME
#                                                  Home Assistant: reads the nodes' discovery
#                                                  configs and what their entities show, sets
#                                                  alpha, publishes its own birth message
#
#   deploy/broker-setup.sh passwd DIR NAME         a new password for an existing account
#
# The password of a new account is read from $ISPLITEE_NEW_PASSWORD, or generated and printed
# once on stdout; only its hash is stored. Give it to the node or worker as ISPLITEE_PASSWORD
# (the installers' --password-file; never in a file others can read), with ISPLITEE_USERNAME
# and ISPLITEE_CA_FILE. An account has one role; adding it again is refused (use passwd).
# A running Mosquitto reads new accounts, passwords and ACL rules when reloaded:
# systemctl reload mosquitto (or kill -HUP its pid).
# The self-signed CA is for trying TLS; in production use your own PKI or Let's Encrypt.
set -euo pipefail

fail() { echo "broker-setup.sh: $*" >&2; exit 2; }
cmd="${1:-}"; dir="${2:-}"
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
case "$cmd" in -h|--help) usage; exit 0 ;; esac
[ -n "$cmd" ] && [ -n "$dir" ] || { usage; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

valid_id() {
  local what="$1" value="$2"
  [ -n "$value" ] || fail "$what is required (see --help)"
  case "$value" in
    *[!A-Za-z0-9_.-]*) fail "ids may hold letters, digits, '_', '.', '-' only: '$value'" ;;
  esac
  [ "${#value}" -le 64 ] || fail "ids are at most 64 characters: '$value'"
  # isplitee/workers/... holds the workers' status: a node by that id would write there.
  [ "$value" != workers ] || fail "'workers' is reserved (isplitee/workers/ holds the workers' status)"
}

# Append an ACL block for an account (once: add_account refuses an existing one).
add_acl() {
  local name="$1" block="$2"
  grep -qx "user $name" "$dir/acl" || printf '\nuser %s\n%s' "$name" "$block" >>"$dir/acl"
}

new_password() {
  if [ -n "${ISPLITEE_NEW_PASSWORD:-}" ]; then
    printf '%s' "$ISPLITEE_NEW_PASSWORD"
  else
    openssl rand -base64 18 | tr -d '/+=\n'
  fi
}

set_password() {
  local name="$1" password
  password="$(new_password)"
  mosquitto_passwd -b "$dir/passwd" "$name" "$password"
  chmod 0640 "$dir/passwd"
  [ -n "${ISPLITEE_NEW_PASSWORD:-}" ] || echo "password for $name: $password"
}

# DIR/accounts: one "NAME ROLE" line per account, so an account keeps one role.
role_of() {
  [ -f "$dir/accounts" ] || return 0
  awk -v n="$1" '$1 == n { print $2 }' "$dir/accounts"
}

add_account() {
  local name="$1" role="$2" had
  [ -f "$dir/passwd" ] || fail "$dir is not set up: run init first"
  had="$(role_of "$name")"
  if [ -n "$had" ] || grep -q "^$name:" "$dir/passwd"; then
    fail "account '$name' exists${had:+ (a $had)}: one role per account; for a new password: broker-setup.sh passwd $dir $name"
  fi
  set_password "$name"
  echo "$name $role" >>"$dir/accounts"
  echo "added $role account $name; reload Mosquitto to use it: systemctl reload mosquitto"
}

# A server certificate for HOST (a name, or an IP address), signed by DIR's CA. Made in new
# files and moved into place only when both steps succeed: a failure leaves the old pair.
server_cert() {
  local host="$1" san new="$dir/.new-server"
  if [[ "$host" =~ ^[0-9]+(\.[0-9]+){3}$ || "$host" == *:* ]]; then
    san="IP:$host"
  elif [[ "$host" =~ ^[0-9.]+$ ]]; then
    fail "'$host' is neither a host name nor a complete IPv4 address"
  else
    san="DNS:$host"
  fi
  [ "$host" = localhost ] || san="$san,DNS:localhost"
  [ "$host" = 127.0.0.1 ] || san="$san,IP:127.0.0.1"
  printf 'subjectAltName=%s\n' "$san" >"$new.ext"
  if ! err="$(openssl req -newkey rsa:2048 -nodes -subj "/CN=$host" -keyout "$new.key" \
      -out "$new.csr" 2>&1 && openssl x509 -req -in "$new.csr" -CA "$dir/ca.crt" \
      -CAkey "$dir/ca.key" -CAcreateserial -days 825 -extfile "$new.ext" -out "$new.crt" 2>&1)"; then
    rm -f "$new".*
    fail "could not make a certificate for '$host' (the old one is kept): $err"
  fi
  chmod 0644 "$new.crt"
  chmod 0640 "$new.key"
  if id mosquitto >/dev/null 2>&1; then chgrp mosquitto "$new.key" 2>/dev/null || true; fi
  mv "$new.key" "$dir/server.key"
  mv "$new.crt" "$dir/server.crt"
  rm -f "$new".*
  echo "server certificate for $host ($san); restart Mosquitto to use it"
}

cert_hosts() { openssl x509 -in "$dir/server.crt" -noout -ext subjectAltName 2>/dev/null | tail -n +2; }

case "$cmd" in
  init)
    host="${3:-localhost}"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if [ ! -f "$dir/ca.crt" ]; then
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=isplitee test CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
      server_cert "$host"
    elif [ -n "${3:-}" ] && ! cert_hosts | grep -qE "(DNS|IP Address):$host(,|$)"; then
      echo "kept the existing server certificate ($(cert_hosts | tr -d ' ')); for $host:"
      echo "  deploy/broker-setup.sh cert $dir $host"
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
  cert)
    host="${3:-}"
    [ -n "$host" ] || fail "HOSTNAME is required: the name or address nodes connect to"
    [ -f "$dir/ca.key" ] || fail "$dir is not set up: run init first"
    server_cert "$host"
    ;;
  passwd)
    id_="${3:-}"; valid_id NAME "$id_"
    grep -q "^$id_:" "$dir/passwd" 2>/dev/null || fail "no account '$id_' in $dir/passwd"
    set_password "$id_"
    echo "reload Mosquitto to use it: systemctl reload mosquitto"
    ;;
  add-node)
    id_="${3:-}"; valid_id DEVICE_ID "$id_"
    # The ACL's patterns already confine a node to isplitee/<its id>/... and its own Home
    # Assistant configs; those name the node with '.' written '_', which %u cannot match.
    add_account "$id_" node
    case "$id_" in
      *.*) add_acl "$id_" "topic write homeassistant/device/isplitee_${id_//./_}/config
topic write homeassistant/+/isplitee_${id_//./_}/+/config
" ;;
    esac
    ;;
  add-worker)
    id_="${3:-}"; valid_id WORKER_ID "$id_"
    add_account "$id_" worker
    # isplitee/workers/activation: the worker's start-up check that activations reach it.
    add_acl "$id_" "$(printf 'topic read isplitee/+/activation\ntopic write isplitee/+/reply\ntopic write isplitee/workers/%s/status\ntopic write isplitee/workers/activation\n' "$id_")
"
    ;;
  add-reader|add-operator)
    id_="${3:-}"; valid_id NAME "$id_"
    add_account "$id_" "${cmd#add-}"
    rules='topic read isplitee/+/result
topic read isplitee/+/state
topic read isplitee/+/events
topic read isplitee/+/snapshot
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
    id_="${3:-}"; valid_id NAME "$id_"
    add_account "$id_" homeassistant
    # Discovery (retained configs) and HA's birth/will on homeassistant/status; the entities
    # read state, snapshots, status, stats and config (results and events for automations);
    # the alpha number writes set/alpha.
    add_acl "$id_" 'topic read homeassistant/#
topic write homeassistant/status
topic read isplitee/+/result
topic read isplitee/+/state
topic read isplitee/+/events
topic read isplitee/+/snapshot
topic read isplitee/+/status
topic read isplitee/+/stats
topic read isplitee/+/config
topic write isplitee/+/set/#
'
    ;;
  *) fail "unknown command '$cmd' (init, cert, passwd, add-node, add-worker, add-reader, add-operator, add-homeassistant)" ;;
esac
