#!/usr/bin/env bash
# Make sure Mosquitto (the broker) and mosquitto-clients (mosquitto_sub / mosquitto_pub, which
# the README uses to read results) are available: the pipeline and its tests need the broker.
# Installs Debian's packages when we are root and apt-get exists; otherwise says how.
set -u
have_broker() { command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; }
have_clients() { command -v mosquitto_sub >/dev/null 2>&1; }
if have_broker && have_clients; then
  exit 0
fi
missing=()
have_broker || missing+=(mosquitto)
have_clients || missing+=(mosquitto-clients)
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The packaged service is not wanted: tests and the demo start their own broker.
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    && exit 0
  echo "apt-get could not install ${missing[*]}; install them by hand" >&2
  exit 1
fi
echo "Mosquitto is missing (${missing[*]}). Install it with: sudo apt-get install ${missing[*]}" >&2
have_broker || exit 1
exit 0
