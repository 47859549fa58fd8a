#!/usr/bin/env bash
# Make sure a Mosquitto broker binary is available: the pipeline and its tests need one.
# Installs Debian's package when we are root and apt-get exists; otherwise says how.
set -u
if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Mosquitto not found: installing Debian's package 'mosquitto'"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null && exit 0
  echo "apt-get could not install mosquitto; install it by hand" >&2
  exit 1
fi
echo "Mosquitto is not installed. Install it with: sudo apt-get install mosquitto"
echo "(tests that need a broker are skipped until it is there)"
exit 0
