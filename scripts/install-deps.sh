#!/usr/bin/env bash
# Install the Debian packages thinghub's tests (and, with "bench", benchmarks) need:
# PostgreSQL for the contract and e2e runs on PostgreSQL; nats-server for the cluster e2e test; Node.js and npm for the ux4iot
# e2e tests, which run the real ux4iot-react and socket.io-client from npm
# (tests/e2e/ux4iot_client, installed there with `npm ci` by the tests themselves; npm, when
# present, also fetches the console's front-end package at install time, see
# scripts/console_assets.py, which needs no npm otherwise);
# Debian's chromium (and a font) for the console's browser tests, which Playwright drives
# through its executable path (tests/e2e/browser.py): no browser is downloaded; gcc and
# libssl-dev for the C MQTT load generator the benchmark guard (tests/bench_guard) builds;
# curl and jq for the docs' examples (tests/e2e/test_docs_examples.py).
# Idempotent: does nothing when everything is already there. Needs root or sudo for apt-get.
set -euo pipefail

want=()
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then want+=(postgresql); fi
command -v nats-server >/dev/null 2>&1 || want+=(nats-server)
command -v node >/dev/null 2>&1 || command -v nodejs >/dev/null 2>&1 || want+=(nodejs)
command -v npm >/dev/null 2>&1 || want+=(npm)
[ -x /usr/bin/chromium ] || want+=(chromium)
[ -d /usr/share/fonts/truetype/dejavu ] || want+=(fonts-dejavu-core)
# curl and jq: the docs' shell examples, which tests/e2e/test_docs_examples.py runs as printed.
command -v curl >/dev/null 2>&1 || want+=(curl)
command -v jq >/dev/null 2>&1 || want+=(jq)
# The MQTT load generator (bench/mqttload/mqttload.c), built by tests/bench_guard and bench/.
command -v cc >/dev/null 2>&1 || want+=(gcc)
[ -f /usr/include/openssl/ssl.h ] || want+=(libssl-dev)
if [ "${1:-}" = "bench" ]; then
  command -v wrk >/dev/null 2>&1 || want+=(wrk)
  command -v mosquitto >/dev/null 2>&1 || want+=(mosquitto)
fi
[ ${#want[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing Debian packages: ${want[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
# The Debian package starts a cluster on 5432; tests run their own servers, so stop it.
if command -v service >/dev/null 2>&1; then $SUDO service postgresql stop >/dev/null 2>&1 || true; fi
