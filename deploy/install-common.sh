# What the camera and the server installers share (sourced, never run): their common options,
# printing or running each step, the flat-TOML key setter, the config check, the password's
# EnvironmentFile and the systemd unit. The caller sets PROG (its name in messages) and SRC.

PREFIX=""
DRY_RUN=0
MODEL=""
BROKER=""
CONFIG=""
USERNAME=""
PASSWORD_FILE=""
CA_FILE=""

# The value of option $1 (its next argument $2), or one line saying it is missing.
need_value() {
  case "${2-}" in
    ""|--*) fail "$1 needs a value (see --help)" ;;
  esac
}

# One option both installers take: sets its variable and SHIFT (how many arguments it used).
common_option() {
  SHIFT=2
  case "$1" in
    --model|--broker|--config|--username|--password-file|--ca-file|--prefix)
      need_value "$1" "${2-}" ;;
  esac
  case "$1" in
    --model) MODEL="$2" ;;
    --broker) BROKER="$2" ;;
    --config) CONFIG="$2" ;;
    --username) USERNAME="$2" ;;
    --password-file) PASSWORD_FILE="$2" ;;
    --ca-file) CA_FILE="$2" ;;
    --prefix) PREFIX="$2" ;;
    --dry-run) DRY_RUN=1; SHIFT=1 ;;
    -h|--help) usage 0 ;;
    *) fail "unknown option $1 (see --help)" ;;
  esac
}

# After the options: check what both take, then set the paths under PREFIX for instance ID.
check_common() {
  local id="$1"
  check_artefact "$MODEL"
  [ -z "$CONFIG" ] || [ -f "$CONFIG" ] || fail "--config $CONFIG: no such file"
  check_credentials
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
  ENV_DEST="$ETC/$id.env"
  CA_DEST="$ETC/ca-$id.crt"
}

usage() {
  # The comment block under the caller's shebang, and nothing after it.
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit "${1:-0}"
}

fail() { echo "$PROG: $*" >&2; exit 2; }
say() { echo "==> $*"; }

run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

# An id is one plain MQTT topic level and a systemd instance name.
check_id() {
  local flag="$1" value="$2"
  [ -n "$value" ] || fail "$flag is required"
  case "$value" in
    *[!A-Za-z0-9_.-]*) fail "$flag may hold letters, digits, '_', '.', '-' only: $value" ;;
  esac
}

check_artefact() {
  local model="$1"
  [ -n "$model" ] || fail "--model is required (the artefact, MODEL.isplitee, of the checkpoint the workers serve)"
  [ -f "$model" ] || fail "--model $model: no such file"
  case "$model" in
    *.isplitee) ;;
    *) fail "--model $model: give the deploy artefact (isplitee export $model writes ${model%.*}.isplitee); this install has no torch to read a checkpoint" ;;
  esac
}

# --username, --password-file, --ca-file: checked before anything is changed.
check_credentials() {
  if [ -n "$CA_FILE" ]; then
    [ -f "$CA_FILE" ] || fail "--ca-file $CA_FILE: no such file"
    openssl x509 -inform PEM -noout -in "$CA_FILE" 2>/dev/null ||
      fail "--ca-file $CA_FILE is not a PEM certificate: give the broker's CA (ca.crt of broker-setup.sh init)"
  fi
  if [ -n "$PASSWORD_FILE" ]; then
    [ -f "$PASSWORD_FILE" ] || fail "--password-file $PASSWORD_FILE: no such file"
    [ -s "$PASSWORD_FILE" ] || fail "--password-file $PASSWORD_FILE is empty"
    [ "$(wc -l <"$PASSWORD_FILE")" -le 1 ] ||
      fail "--password-file $PASSWORD_FILE: the password alone, on one line"
  fi
  case "$USERNAME" in
    *[\"\\]*) fail "--username may not hold quotes or backslashes: $USERNAME" ;;
  esac
}

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

# The config to install, in $TMP_CONF: --config if given (the installed one is kept as .bak),
# else the installed one (the user's edits survive a re-run), else the example; then the keys
# the flags give. CONF_FROM names where it came from, for messages.
prepare_config() {
  local dest="$1" given="$2" example="$3"
  TMP_CONF="$(mktemp)"
  if [ -n "$given" ]; then
    CONF_FROM="$given"
  elif [ -e "$dest" ]; then
    CONF_FROM="$dest"
    say "keeping the existing $dest (the flags given update their keys)"
  else
    CONF_FROM="$example"
  fi
  cp "$CONF_FROM" "$TMP_CONF"
  # A new --config replaces the installed one: keys an earlier run's flags wrote there, and
  # that neither the new file nor this run's flags give, are carried over (or the node would
  # fall back to a broker on 127.0.0.1).
  if [ -n "$given" ] && [ -e "$dest" ]; then
    local key line
    for key in broker username ca_file; do
      line="$(grep -m1 "^$key *=" "$dest" || true)"
      if [ -n "$line" ] && ! grep -q "^$key *=" "$TMP_CONF"; then
        [ -z "$(tail -c 1 "$TMP_CONF")" ] || echo >>"$TMP_CONF"
        echo "$line" >>"$TMP_CONF"
        say "kept $key from the installed config ($line)"
      fi
    done
  fi
  # A last line without its newline would run into the first key appended.
  [ ! -s "$TMP_CONF" ] || [ -z "$(tail -c 1 "$TMP_CONF")" ] || echo >>"$TMP_CONF"
  [ -z "$BROKER" ] || set_key broker "\"$BROKER\"" "$TMP_CONF"
  [ -z "$USERNAME" ] || set_key username "\"$USERNAME\"" "$TMP_CONF"
  [ -z "$CA_FILE" ] || set_key ca_file "\"/etc/isplitee/$(basename "$CA_DEST")\"" "$TMP_CONF"
}

# The program's own check, before the model, the config or the unit is installed: a bad key
# or value stops the install with the program's one-line message (only the venv is new).
check_config() {
  local program="$1" id_flag="$2" id="$3" dest="$4"
  say "checking the config with $program --check-config"
  if [ "$DRY_RUN" = 1 ]; then
    run "$VENV/bin/$program" --config "$dest" "$id_flag" "$id" --check-config
  elif ! CHECK="$("$VENV/bin/$program" --config "$TMP_CONF" "$id_flag" "$id" --check-config \
      2>&1 >/dev/null)"; then
    CHECK="${CHECK#"$program": error: }"
    fail "the config from $CONF_FROM (with the flags given) is refused; the model, config and unit are unchanged: ${CHECK//$TMP_CONF/$CONF_FROM}"
  fi
}

# The checked config, and the credentials the flags gave.
install_config() {
  local dest="$1"
  if ! cmp -s "$TMP_CONF" "$dest" 2>/dev/null; then
    if [ -e "$dest" ] && [ -n "$CONFIG" ]; then
      say "replacing $dest with $CONFIG (the old one is kept as $dest.bak)"
      run cp -p "$dest" "$dest.bak"
    fi
    run install -m 0640 "$TMP_CONF" "$dest"
  fi
  [ -z "$CA_FILE" ] || run install -m 0644 "$CA_FILE" "$CA_DEST"
  if [ -n "$PASSWORD_FILE" ]; then
    # systemd reads it, as root, into ISPLITEE_PASSWORD (the unit's EnvironmentFile=); nobody
    # else can read it, and the config never holds the password.
    say "password into $ENV_DEST (0600)"
    if [ "$DRY_RUN" = 1 ]; then
      echo "+ write ISPLITEE_PASSWORD=... to $ENV_DEST"
    else
      (umask 077 && printf 'ISPLITEE_PASSWORD="%s"\n' \
        "$(tr -d '\r\n' <"$PASSWORD_FILE" | sed 's/[\\"]/\\&/g')" >"$ENV_DEST")
      chmod 0600 "$ENV_DEST"
    fi
  fi
}

# The unit, installed and (on a real install) enabled and started as UNIT@ID.
install_unit() {
  local unit="$1" id="$2"
  say "systemd unit $unit@$id"
  run install -d "$UNIT_DIR"
  run install -m 0644 "$SRC/deploy/systemd/$unit@.service" "$UNIT_DIR/"
  if [ -z "$PREFIX" ]; then
    # The state directory is the service's; the models stay root's, read-only to it.
    run chown isplitee:isplitee "$LIB"
    run chgrp isplitee "$CONF_DEST"
    run systemctl daemon-reload
    run systemctl enable --now "$unit@$id"
    say "done: journalctl -u $unit@$id -f"
  else
    say "done (fake root $PREFIX: nothing enabled)"
  fi
}

# The system user every unit runs as.
ensure_user() {
  if ! id isplitee >/dev/null 2>&1; then
    say "user isplitee"
    run useradd --system --home-dir /var/lib/isplitee --shell /usr/sbin/nologin "$@" isplitee
  fi
}
