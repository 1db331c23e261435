#!/usr/bin/env bash
# The long deployment test: the images built and run as users run them.
#   tests/deploy/run.sh        (root, or a member of the docker group)
#
# 1. Installs Docker (Debian's docker.io, docker-compose), starts dockerd if
#    none runs, and makes a Debian 12 base image from Debian's packages when
#    no registry can be reached (deploy/base-image.sh).
# 2. Builds deploy/Dockerfile's three images (cardgate, postgres, haproxy).
# 3. The cardgate image alone, read-only root filesystem, host network on
#    free loopback ports, against the postgres image and the simulator: it
#    migrates, turns healthy (HEALTHCHECK), opens a card, replays it, runs as
#    uid 10001, and exits 0 on SIGTERM (the drain).
# 4. deploy/compose.yaml with three cardgate instances behind HAProxy: cards
#    opened through the load balancer; 30 duplicates of one out_serial_no,
#    spread over the instances, make one gateway call; one instance
#    restarted (SIGTERM, drain, start) under steady load fails no request;
#    then torn down with its volume.
# Prints what it checks; exits non-zero at the first failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
top=$(pwd)
. deploy/common.sh
CARDGATE_PACKAGES=(docker.io docker-compose debootstrap curl openssl ca-certificates)
install_deps

say() { printf 'deploy: %s\n' "$*"; }
fail() {
    printf 'deploy: FAILED: %s\n' "$*" >&2
    exit 1
}

# --- Docker ----------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    say "starting dockerd"
    (as_root dockerd >/tmp/cardgate-dockerd.log 2>&1 &)
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || fail "dockerd did not start (see /tmp/cardgate-dockerd.log)"
fi
base=${CARDGATE_BASE_IMAGE:-}
if [ -z "$base" ]; then
    if docker pull -q debian:12-slim >/dev/null 2>&1 && docker pull -q debian:12 >/dev/null 2>&1; then
        build_image=debian:12 runtime_image=debian:12-slim
    else
        base=cardgate-debian:12
    fi
fi
if [ -n "$base" ]; then
    docker image inspect "$base" >/dev/null 2>&1 || { say "making $base from Debian packages"; deploy/base-image.sh "$base"; }
    build_image=$base runtime_image=$base
fi

tag=deploytest
project=cgdeploy$$
work=$(mktemp -d /tmp/cardgate-deploy.XXXXXX)
chmod 755 "$work"
single=(cg-dt-pg-$$ cg-dt-sim-$$ cg-dt-cg-$$)
compose() {
    docker-compose -p "$project" -f "$top/deploy/compose.yaml" "$@"
}
cleanup() {
    docker rm -f "${single[@]}" >/dev/null 2>&1 || true
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# The vectors' keys, under the names the images expect; a test API key.
mkdir -p "$work/keys"
cp tests/vectors/keys/app_private_pkcs1.pem "$work/keys/app_private.pem"
cp tests/vectors/keys/alipay_public_sim.pem "$work/keys/alipay_public.pem"
cp tests/vectors/keys/app_public.pem "$work/keys/app_public.pem"
cp tests/vectors/keys/alipay_private_sim.pem "$work/keys/alipay_private.pem"
chmod 755 "$work/keys" && chmod 644 "$work/keys"/*
api_key=deploy-test-key-0123456789
api_keys="pos:$(printf '%s' "$api_key" | sha256sum | cut -c1-64)"
app_id=2021000000000001

# --- the images --------------------------------------------------------------
for target in cardgate postgres haproxy; do
    name=cardgate; [ "$target" = cardgate ] || name=cardgate-$target
    say "building $name:$tag (from $build_image / $runtime_image)"
    docker build -q --network host -f deploy/Dockerfile --target "$target" \
        --build-arg BUILD_IMAGE="$build_image" --build-arg RUNTIME_IMAGE="$runtime_image" \
        -t "$name:$tag" . >/dev/null 2>"$work/build.log" || { cat "$work/build.log"; fail "docker build $target"; }
done
size=$(docker image inspect -f '{{.Size}}' "cardgate:$tag" | awk '{printf "%.1f MB", $1/1e6}')
say "cardgate:$tag is $size"
[ "$(docker image inspect -f '{{.Config.User}}' "cardgate:$tag")" = 10001:10001 ] || fail "the image's user is not 10001"

# One POST /v1/cards of serial at url; prints the status, the body in $work/body.
open_card() {
    local url=$1 serial=$2
    curl -s -o "$work/body" -D "$work/headers" -w '%{http_code}' -X POST "$url/v1/cards" \
        -H "Authorization: Bearer $api_key" -H 'Content-Type: application/json; charset=utf-8' \
        --data "{\"out_serial_no\":\"$serial\",\"card_template_id\":\"20170308000000000058101000300045\",\"user_id\":\"2088302463082075\",\"card\":{\"external_card_no\":\"EXT-$serial\",\"open_date\":\"2024-02-20 21:20:46\",\"valid_date\":\"2030-02-20 21:20:46\",\"level\":\"VIP1\",\"point\":\"1\"}}" || true
}

wait_health() { # container: waits until Docker calls it healthy
    for _ in $(seq 1 120); do
        [ "$(docker inspect -f '{{.State.Health.Status}}' "$1" 2>/dev/null)" = healthy ] && return 0
        sleep 0.5
    done
    docker logs "$1" 2>&1 | tail -20
    fail "$1 never turned healthy"
}

# --- 3. the cardgate image alone ---------------------------------------------
pgport=$(free_port) simport=$(free_port) cgport=$(free_port)
say "single container: PostgreSQL :$pgport, alipay-sim :$simport, cardgate :$cgport"
docker run -d --name "${single[0]}" --network host -e PGPORT="$pgport" -e POSTGRES_PASSWORD=pw \
    -e POSTGRES_DB=cardgate "cardgate-postgres:$tag" >/dev/null
wait_health "${single[0]}"
db="postgresql://postgres:pw@127.0.0.1:$pgport/cardgate"
docker run --rm --network host --read-only -e CARDGATE_DATABASE_URL="$db" "cardgate:$tag" migrate ||
    fail "cardgate migrate in the image"
docker run -d --name "${single[1]}" --network host -v "$work/keys:/keys:ro" \
    --entrypoint /usr/local/bin/alipay-sim "cardgate:$tag" --listen "127.0.0.1:$simport" \
    --app-public-key /keys/app_public.pem --alipay-private-key /keys/alipay_private.pem >/dev/null
for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$simport/_sim/calls")" = 200 ] && break
    sleep 0.2
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$simport/_sim/calls")" = 200 ] ||
    { docker logs "${single[1]}" 2>&1 | tail -5; fail "alipay-sim in the image did not start"; }
docker run -d --name "${single[2]}" --network host --read-only --stop-timeout 30 \
    -v "$work/keys:/keys:ro" -e CARDGATE_LISTEN="127.0.0.1:$cgport" -e CARDGATE_DATABASE_URL="$db" \
    -e CARDGATE_ALIPAY_GATEWAY="http://127.0.0.1:$simport/gateway.do" -e CARDGATE_ALIPAY_ALLOW_HTTP=1 \
    -e CARDGATE_ALIPAY_APP_ID="$app_id" -e CARDGATE_ALIPAY_PRIVATE_KEY_FILE=/keys/app_private.pem \
    -e CARDGATE_ALIPAY_PUBLIC_KEY_FILE=/keys/alipay_public.pem -e CARDGATE_API_KEYS="$api_keys" \
    "cardgate:$tag" >/dev/null
wait_health "${single[2]}"
say "cardgate container healthy (HEALTHCHECK: cardgate health)"
[ "$(docker exec "${single[2]}" id -u)" = 10001 ] || fail "cardgate runs as root in its container"
status=$(open_card "http://127.0.0.1:$cgport" dt-single-1)
[ "$status" = 201 ] || fail "open through the container: $status $(cat "$work/body")"
grep -q '"biz_card_no"' "$work/body" || fail "no biz_card_no in $(cat "$work/body")"
status=$(open_card "http://127.0.0.1:$cgport" dt-single-1)
[ "$status" = 201 ] && grep -qi '^Idempotent-Replayed: true' "$work/headers" || fail "the replay: $status"
say "a card opened through the container, and replayed"
docker stop "${single[2]}" >/dev/null
[ "$(docker inspect -f '{{.State.ExitCode}}' "${single[2]}")" = 0 ] || fail "cardgate did not exit 0 on SIGTERM"
say "stopped cleanly on SIGTERM"
docker rm -f "${single[@]}" >/dev/null

# --- 4. compose: three instances behind HAProxy ---------------------------------
export CARDGATE_TAG=$tag CARDGATE_BUILD_IMAGE=$build_image CARDGATE_RUNTIME_IMAGE=$runtime_image
export CARDGATE_KEYS_DIR=$work/keys CARDGATE_API_KEYS=$api_keys CARDGATE_ALIPAY_APP_ID=$app_id
CARDGATE_LB_PORT=$(free_port) CARDGATE_SIM_PORT=$(free_port)
export CARDGATE_LB_PORT CARDGATE_SIM_PORT
lb="http://127.0.0.1:$CARDGATE_LB_PORT" sim="http://127.0.0.1:$CARDGATE_SIM_PORT"
say "compose: up with 3 cardgate instances, load balancer on :$CARDGATE_LB_PORT"
compose up -d --scale cardgate=3 >"$work/compose.log" 2>&1 || { cat "$work/compose.log"; fail "compose up"; }
mapfile -t instances < <(compose ps -q cardgate)
[ "${#instances[@]}" = 3 ] || fail "${#instances[@]} cardgate instances, not 3"
for c in "${instances[@]}"; do wait_health "$c"; done
for _ in $(seq 1 120); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$lb/readyz")" = 200 ] && break
    sleep 0.5
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$lb/readyz")" = 200 ] || fail "the load balancer is not ready"

for i in $(seq 1 20); do
    status=$(open_card "$lb" "dt-lb-$i")
    [ "$status" = 201 ] || fail "open dt-lb-$i through the load balancer: $status $(cat "$work/body")"
done
say "20 cards opened through the load balancer"

# 30 duplicates at once while the gateway holds its answer 1.5 s.
curl -s -o /dev/null -X POST "$sim/_sim/faults" -H 'Content-Type: application/json' \
    --data '{"mode":"delay","out_serial_no":"dt-dup","delay_ms":1500}'
for i in $(seq 1 30); do
    (
        s=$(curl -s -o "$work/dup-$i.body" -D "$work/dup-$i.h" -w '%{http_code}' -X POST "$lb/v1/cards" \
            -H "Authorization: Bearer $api_key" -H 'Content-Type: application/json; charset=utf-8' \
            --data '{"out_serial_no":"dt-dup","card_template_id":"20170308000000000058101000300045","user_id":"2088302463082075","card":{"external_card_no":"EXT-dt-dup","open_date":"2024-02-20 21:20:46","valid_date":"2030-02-20 21:20:46","level":"VIP1","point":"1"}}')
        echo "$s" >"$work/dup-$i.status"
    ) &
done
wait
created=0
for i in $(seq 1 30); do
    s=$(cat "$work/dup-$i.status")
    if [ "$s" = 201 ]; then
        grep -qi '^Idempotent-Replayed: true' "$work/dup-$i.h" || created=$((created + 1))
    elif [ "$s" != 409 ]; then
        fail "duplicate $i: $s $(cat "$work/dup-$i.body")"
    fi
done
[ "$created" = 1 ] || fail "$created duplicates opened a card, not 1"
calls=$(curl -s "$sim/_sim/calls?out_serial_no=dt-dup" | sed -n 's/.*"count": *\([0-9]*\).*/\1/p')
[ "$calls" = 1 ] || fail "$calls gateway calls for the duplicates, not 1"
reached=0
for c in "${instances[@]}"; do
    docker logs "$c" 2>&1 | grep -q 'dt-dup' && reached=$((reached + 1))
done
[ "$reached" -ge 2 ] || fail "the duplicates reached $reached instance(s), not several"
say "30 duplicates over $reached instances: one card, one gateway call"

# Steady load while one instance restarts: every answer must be 201.
rm -f "$work/stop"
for w in 1 2 3 4; do
    (
        n=0
        while [ ! -e "$work/stop" ]; do
            n=$((n + 1))
            s=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$lb/v1/cards" \
                -H "Authorization: Bearer $api_key" -H 'Content-Type: application/json; charset=utf-8' \
                --data "{\"out_serial_no\":\"dt-load-$w-$n\",\"card_template_id\":\"20170308000000000058101000300045\",\"user_id\":\"2088302463082075\",\"card\":{\"external_card_no\":\"EXT-dt-load-$w-$n\",\"open_date\":\"2024-02-20 21:20:46\",\"valid_date\":\"2030-02-20 21:20:46\",\"level\":\"VIP1\",\"point\":\"1\"}}")
            echo "$s" >>"$work/load-$w"
        done
    ) &
done
sleep 2
say "restarting ${instances[0]:0:12} under load"
docker restart -t 30 "${instances[0]}" >/dev/null
wait_health "${instances[0]}"
sleep 3
touch "$work/stop"
wait
total=$(cat "$work"/load-* | wc -l)
bad=$(cat "$work"/load-* | grep -vc '^201$' || true)
[ "$total" -ge 50 ] || fail "only $total requests during the restart"
[ "$bad" = 0 ] || fail "$bad of $total requests failed during the restart: $(sort "$work"/load-* | uniq -c | tr '\n' ' ')"
say "$total opens during the restart, none failed"

compose down -v >/dev/null 2>&1
say "passed (cardgate image $size)"
