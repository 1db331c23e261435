#!/usr/bin/env bash
# The test command: on a fresh Debian 12 machine it installs what is missing,
# builds with AddressSanitizer and UndefinedBehaviorSanitizer, starts a
# throwaway PostgreSQL cluster on a free loopback port, and runs every test
# (unit and integration) through ctest. The integration tests start the real
# alipay-sim and cardgate binaries themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/common.sh

# TS_VALGRIND=1: the long memcheck run (README, Reliability): a build
# without the sanitizers, every cardgate and alipay-sim the tests start
# under valgrind.
if [ "${TS_VALGRIND:-0}" != 0 ]; then
    CARDGATE_PACKAGES+=(valgrind)
    build=build-valgrind
    sanitize=OFF
else
    build=build-test
    sanitize=ON
fi
install_deps

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DCARDGATE_SANITIZE=$sanitize >/dev/null
cmake --build "$build" -j2

pgdir=$(mktemp -d /tmp/cardgate-test-pg.XXXXXX)
chmod 755 "$pgdir"
pgport=$(free_port)
cleanup() { stop_pg "$pgdir"; rm -rf "$pgdir"; }
trap cleanup EXIT
start_pg "$pgdir" "$pgport"
export CARDGATE_TEST_PG="host=127.0.0.1 port=$pgport user=postgres dbname=postgres"
echo "throwaway PostgreSQL on 127.0.0.1:$pgport ($pgdir)"

cd "$build"
if [ "$sanitize" = ON ]; then
    ctest --output-on-failure -j2 "$@"
    exit
fi
# Under valgrind everything runs 20-50x slower, so tests bound by time (a
# deadline, a gateway timeout) may fail for that alone; the memcheck verdict
# is every cardgate's and alipay-sim's log, which hold valgrind's reports and
# nothing else of valgrind's (--quiet).
rm -f tests/cardgate-*.log tests/alipay-sim-*.log
ctest --output-on-failure -j2 "$@" || echo "(some tests failed; under valgrind, see above whether from slowness)"
reports=$(grep -l '^==[0-9]*== ' tests/cardgate-*.log tests/alipay-sim-*.log 2>/dev/null || true)
if [ -n "$reports" ]; then
    echo "valgrind memcheck reports in:" $reports
    exit 1
fi
echo "valgrind memcheck: no report in $(ls tests/cardgate-*.log | wc -l) cardgate and" \
    "$(ls tests/alipay-sim-*.log | wc -l) alipay-sim logs"
