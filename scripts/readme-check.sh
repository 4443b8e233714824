#!/usr/bin/env bash
# Run the README's install line and test line exactly as written, in a fresh copy of the
# repository in a temporary directory (no container): what a new user on Debian/Ubuntu does.
#
#   scripts/readme-check.sh            install, start, check, stop; then the test line
#   scripts/readme-check.sh --no-tests install, start, check, stop only
#
# The install line ends in `thinghub serve`, which runs until stopped: it runs here with
# every THINGHUB_*_PORT=0 (ephemeral ports, so a busy 8080 on the CI machine does not
# matter) and THINGHUB_READY_FILE; once ready, its health, an API docs page and one of
# the docs' script files (served offline) are fetched, then it gets SIGTERM and must exit 0.
# The copy is the working tree's tracked and untracked-but-not-ignored files.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
run_tests=1
[ "${1:-}" = "--no-tests" ] && run_tests=0

# The shell block after a `<!-- readme-check: NAME -->` marker in README.md.
block() {
  awk -v name="$1" '
    $0 ~ "<!-- readme-check: " name " -->" { armed = 1; next }
    armed && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }
  ' "$here/README.md"
}

install_line="$(block install)"
test_line="$(block test)"
if [ -z "$install_line" ] || [ -z "$test_line" ]; then
  echo "readme-check: README.md has no install or test block" >&2
  exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/thinghub-readme.XXXXXX")"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$here" && git ls-files -z --cached --others --exclude-standard) |
  (cd "$here" && tar --null -T - -cf -) | tar -xf - -C "$work/"
cd "$work"
echo "readme-check: in $work"
echo "readme-check: install line: $install_line"

ready="$work/ready.json"
# The line runs in a shell of its own (its own process group: TERM reaches the server).
THINGHUB_HTTP_PORT=0 THINGHUB_MQTT_PORT=0 THINGHUB_ITWIN_TCP_PORT=0 THINGHUB_ITWIN_WS_PORT=0 \
  THINGHUB_READY_FILE="$ready" setsid bash -c "$install_line" >"$work/install.out" 2>"$work/install.err" &
server_pid=$!
deadline=$((SECONDS + 600)) # pip downloads and builds every dependency
while [ ! -s "$ready" ]; do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "readme-check: the install line ended before the server was ready:" >&2
    tail -40 "$work/install.err" >&2
    exit 1
  fi
  if [ $SECONDS -gt $deadline ]; then
    echo "readme-check: no ready server after 600 s" >&2
    exit 1
  fi
  sleep 0.5
done
url="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"]["url"])' "$ready")"
echo "readme-check: server ready at $url"
python3 - "$url" <<'EOF'
import sys
import urllib.request

base = sys.argv[1]
for path, needle in (
    ("/healthz", b'"ok"'),
    ("/v1/docs", b"/v1/docs/assets/swagger-ui-bundle.js"),
    ("/v1/docs/assets/swagger-ui-bundle.js", b"SwaggerUIBundle"),
    ("/v1/openapi.json", b'"servers":[{"url":"/v1"}]'),
):
    with urllib.request.urlopen(base + path, timeout=30) as response:
        body = response.read()
        assert response.status == 200 and needle in body, (path, response.status, body[:200])
    print(f"readme-check: GET {path} ok")
EOF
kill -TERM -- "-$server_pid"
code=0
wait "$server_pid" || code=$?
server_pid=""
if [ "$code" -ne 0 ]; then
  echo "readme-check: the server exited $code on SIGTERM" >&2
  tail -40 "$work/install.err" >&2
  exit 1
fi
echo "readme-check: the install line works (server stopped cleanly)"

if [ "$run_tests" -eq 1 ]; then
  echo "readme-check: test line: $test_line"
  bash -c "$test_line"
  echo "readme-check: the test line passed"
fi
