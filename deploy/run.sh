#!/usr/bin/env bash
# The run command: installs what is missing, builds, and runs a development
# cardgate on 127.0.0.1:8080 against a private PostgreSQL cluster and the
# alipay-sim gateway stand-in, with development keys. Everything it makes
# lives in .run/ (ignored by git); run it again and it reuses the cluster,
# the keys and the API key, and restarts the processes cleanly.
#   deploy/run.sh          start (or restart) everything
#   deploy/run.sh --cert   ... in Alipay's certificate mode (the test PKI of
#                          tests/vectors/cert: app 2021000000000001)
#   deploy/run.sh --aes    ... with content encryption (a development AES key)
#   deploy/run.sh --cert --aes   both
#   deploy/run.sh stop     stop cardgate, alipay-sim and PostgreSQL
# CARDGATE_API_PORT (8080) and CARDGATE_SIM_PORT (8081) move the two ports.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/common.sh
top=$(pwd)
run="$top/.run"
mkdir -p "$run/keys"

cert=0 aes=0 stop=0
for arg in "$@"; do
    case $arg in
    --cert) cert=1 ;;
    --aes) aes=1 ;;
    stop) stop=1 ;;
    *)
        echo "usage: deploy/run.sh [--cert] [--aes] | deploy/run.sh stop" >&2
        exit 2
        ;;
    esac
done

stop_pid() {
    local f=$1
    if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
        kill -TERM "$(cat "$f")"
        for _ in $(seq 1 100); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$f"
}

if [ "$stop" = 1 ]; then
    stop_pid "$run/cardgate.pid"
    stop_pid "$run/alipay-sim.pid"
    [ -e "$run/pg" ] && stop_pg "$run/pg"
    echo "stopped"
    exit 0
fi

install_deps
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCARDGATE_TESTS=OFF >/dev/null
cmake --build build -j2 >/dev/null

# PostgreSQL refuses to run as root; the postgres user must reach the
# cluster's folder. When it cannot (a clone under /root), the cluster lives
# in /var/lib/cardgate-dev and .run/pg points there.
if [ ! -e "$run/pg" ]; then
    if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$run"; then
        alt="/var/lib/cardgate-dev/$(echo "$top" | md5sum | cut -c1-12)"
        mkdir -p "$alt"
        ln -s "$alt" "$run/pg"
    else
        mkdir -p "$run/pg"
    fi
fi
[ -f "$run/pg.port" ] || free_port >"$run/pg.port"
pgport=$(cat "$run/pg.port")
stop_pid "$run/cardgate.pid"
stop_pid "$run/alipay-sim.pid"
stop_pg "$run/pg"
start_pg "$run/pg" "$pgport"
psql -h 127.0.0.1 -p "$pgport" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='cardgate'" |
    grep -q 1 || psql -h 127.0.0.1 -p "$pgport" -U postgres -qc "CREATE DATABASE cardgate"

# Development keys: the app's key pair and a stand-in for Alipay's.
for k in app alipay; do
    if [ ! -f "$run/keys/${k}_private.pem" ]; then
        openssl genrsa -out "$run/keys/${k}_private.pem" 2048 2>/dev/null
        openssl rsa -in "$run/keys/${k}_private.pem" -pubout -out "$run/keys/${k}_public.pem" 2>/dev/null
    fi
done
# Content encryption: the app's AES key, as Alipay's console shows it.
[ -f "$run/keys/aes_key" ] || openssl rand -base64 16 >"$run/keys/aes_key"
[ -f "$run/api_key" ] || openssl rand -hex 24 >"$run/api_key"
api_key=$(cat "$run/api_key")
api_hash=$(printf %s "$api_key" | sha256sum | cut -d' ' -f1)
simport=${CARDGATE_SIM_PORT:-8081}
apiport=${CARDGATE_API_PORT:-8080}

export CARDGATE_DATABASE_URL="host=127.0.0.1 port=$pgport user=postgres dbname=cardgate"
export CARDGATE_LISTEN=127.0.0.1:$apiport
export CARDGATE_PUBLIC_URL=http://127.0.0.1:$apiport
export CARDGATE_API_KEYS="dev:$api_hash"
export CARDGATE_ALIPAY_GATEWAY="http://127.0.0.1:$simport/gateway.do"
export CARDGATE_ALIPAY_ALLOW_HTTP=1 # the simulator speaks plain http
export CARDGATE_ALIPAY_APP_ID=2021000000000001
export CARDGATE_LOG_FORMAT=${CARDGATE_LOG_FORMAT:-text}
# The modes' settings come from here only, never from the caller's shell.
unset CARDGATE_ALIPAY_PUBLIC_KEY_FILE CARDGATE_ALIPAY_APP_CERT_FILE CARDGATE_ALIPAY_CERT_FILE \
    CARDGATE_ALIPAY_ROOT_CERT_FILE CARDGATE_ALIPAY_ENCRYPT_KEY

sim_args=(--listen "127.0.0.1:$simport" --app-id "$CARDGATE_ALIPAY_APP_ID")
mode="public-key mode"
if [ "$cert" = 1 ]; then
    # Certificate mode with the test PKI (its app certificate is for app
    # 2021000000000001): the simulator checks the app's SNs and signs with
    # Alipay's certificate key; cardgate signs with the app certificate's key.
    v="$top/tests/vectors/cert"
    sim_args+=(--app-cert "$v/appCertPublicKey_2021000000000001.crt" --root-cert "$v/alipayRootCert.crt"
        --alipay-cert "$v/alipayCertPublicKey_RSA2.crt" --alipay-private-key "$v/alipayCertPrivateKey_RSA2.pem")
    export CARDGATE_ALIPAY_PRIVATE_KEY_FILE="$v/appCertPrivateKey_2021000000000001.pem"
    export CARDGATE_ALIPAY_APP_CERT_FILE="$v/appCertPublicKey_2021000000000001.crt"
    export CARDGATE_ALIPAY_CERT_FILE="$v/alipayCertPublicKey_RSA2.crt"
    export CARDGATE_ALIPAY_ROOT_CERT_FILE="$v/alipayRootCert.crt"
    mode="certificate mode"
else
    sim_args+=(--app-public-key "$run/keys/app_public.pem" --alipay-private-key "$run/keys/alipay_private.pem")
    export CARDGATE_ALIPAY_PRIVATE_KEY_FILE="$run/keys/app_private.pem"
    export CARDGATE_ALIPAY_PUBLIC_KEY_FILE="$run/keys/alipay_public.pem"
fi
if [ "$aes" = 1 ]; then
    sim_args+=(--aes-key "$(cat "$run/keys/aes_key")")
    export CARDGATE_ALIPAY_ENCRYPT_KEY="$(cat "$run/keys/aes_key")"
    mode="$mode, content encryption (AES key in .run/keys/aes_key)"
fi

build/bin/alipay-sim "${sim_args[@]}" >>"$run/alipay-sim.log" 2>&1 &
echo $! >"$run/alipay-sim.pid"
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$simport/_sim/health" >/dev/null 2>&1 && break
    kill -0 "$(cat "$run/alipay-sim.pid")" 2>/dev/null || break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$simport/_sim/health" >/dev/null || {
    echo "alipay-sim did not start; see $run/alipay-sim.log:"
    tail -n 5 "$run/alipay-sim.log"
    exit 1
}
build/bin/cardgate migrate
build/bin/cardgate serve >>"$run/cardgate.log" 2>&1 &
echo $! >"$run/cardgate.pid"
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$apiport/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$apiport/readyz" >/dev/null || { echo "cardgate did not become ready ($mode); see $run/cardgate.log"; exit 1; }

serial="DEMO$(date +%s)"
cat <<MSG

cardgate is running on http://127.0.0.1:$apiport in $mode (logs: .run/cardgate.log, .run/alipay-sim.log)
  PostgreSQL: psql -h 127.0.0.1 -p $pgport -U postgres cardgate
  API key:    $api_key
  stop:       deploy/run.sh stop

Open a card:
  curl -s -X POST http://127.0.0.1:$apiport/v1/cards \\
    -H 'Authorization: Bearer $api_key' -H 'Content-Type: application/json; charset=utf-8' \\
    -d '{"out_serial_no":"$serial","card_template_id":"20170308000000000058101000300045",
         "user_id":"2088302463082075","auth_token":"composeB_demo",
         "card":{"external_card_no":"EXT-$serial","open_date":"2024-02-20 21:20:46",
                 "valid_date":"2030-02-20 21:20:46","level":"VIP1","point":"88","balance":"124.89",
                 "front_text_list":[{"label":"专业","value":"金融贸易"}]},
         "member":{"name":"Lee","gender":"MALE","cell":"13000000000"}}'

Query it (use the biz_card_no the open returned):
  curl -s -H 'Authorization: Bearer $api_key' http://127.0.0.1:$apiport/v1/cards/BIZ_CARD_NO

Look it up at the till by the dynamic code in the wallet (the simulator shows it):
  curl -s http://127.0.0.1:$simport/_sim/cards/BIZ_CARD_NO
  curl -s -H 'Authorization: Bearer $api_key' 'http://127.0.0.1:$apiport/v1/cards/lookup?code=QR_CODE&type=D_QR_CODE'

Find the mapping in the database:
  curl -s -H 'Authorization: Bearer $api_key' 'http://127.0.0.1:$apiport/v1/cards?out_serial_no=$serial'

After a purchase: points, balance and level, with a "+20 points" message to the member
(occur_time orders the updates of a card; an older one is refused with 409 STALE_UPDATE):
  curl -s -X PATCH http://127.0.0.1:$apiport/v1/cards/BIZ_CARD_NO \\
    -H 'Authorization: Bearer $api_key' -H 'Content-Type: application/json; charset=utf-8' \\
    -d '{"out_serial_no":"$serial-U1","occur_time":"$(TZ=Asia/Shanghai date '+%Y-%m-%d %H:%M:%S')",
         "card":{"point":"108","balance":"100.00","level":"VIP2"},"changed_point":"20"}'

The member leaves (reason_code USER_UNBUND, CANCEL or PRESENT):
  curl -s -X DELETE -H 'Authorization: Bearer $api_key' \\
    'http://127.0.0.1:$apiport/v1/cards/BIZ_CARD_NO?out_serial_no=$serial-D&reason_code=CANCEL'

A membership program from scratch, and a member signing up at the till (paste in order):
  K='Authorization: Bearer $api_key'; J='Content-Type: application/json; charset=utf-8'
  TPL=\$(curl -s -X POST http://127.0.0.1:$apiport/v1/templates -H "\$K" -H "\$J" -d '{"request_id":"$serial-T",
      "template":{"card_type":"OUT_MEMBER_CARD","biz_no_prefix":"demo","biz_no_suffix_len":"10",
        "write_off_type":"qrcode","template_style_info":{"card_show_name":"会员卡","logo_id":"1T8Pp00AT7eo9NoAJkMR3AAAACMAAQEC",
        "background_id":"1T8Pp00AT7eo9NoAJkMR3AAAACMAAQEC","bg_color":"rgb(55,112,179)"},
        "field_rule_list":[{"field_name":"Balance","rule_name":"ASSIGN_FROM_REQUEST","rule_value":"Balance"}]}}' \\
    | sed -n 's/.*"template_id":"\\([^"]*\\)".*/\\1/p'); echo "template \$TPL"
  curl -s -X PUT http://127.0.0.1:$apiport/v1/templates/\$TPL/form -H "\$K" -H "\$J" \\
    -d '{"required":["OPEN_FORM_FIELD_MOBILE","OPEN_FORM_FIELD_NAME"],"optional":["OPEN_FORM_FIELD_GENDER"]}'
  curl -s -X PUT http://127.0.0.1:$apiport/v1/templates/\$TPL/activation -H "\$K" -H "\$J" \\
    -d '{"valid_date":"2030-12-31 23:59:59","level":"VIP1","point":"0","balance":"0.00",
         "external_card_no_prefix":"M","success_url":"https://example.com/welcome"}'
  # apply_card_url is the QR code the till shows. The simulator plays the member who scans it
  # and fills in the form; Alipay then sends the member's browser to cardgate's callback:
  CB=\$(curl -s -X POST http://127.0.0.1:$simport/_sim/members -d "{\\"template_id\\":\\"\$TPL\\"}" \\
    | sed -n 's/.*"callback_url":"\\([^"]*\\)".*/\\1/p'); echo "\$CB"
  curl -si "\$CB" | grep -i '^location'   # 302 to success_url?biz_card_no=...: the card is open
MSG
if [ "$cert" = 1 ]; then
    cat <<MSG

Alipay rotates its certificate: answers then name the new one, which cardgate downloads once,
checks against the root bundle and keeps (alipay_certs) before it trusts the answer:
  curl -s -X PUT http://127.0.0.1:$simport/_sim/alipay-cert \\
    -d '{"cert":"$v/alipayCertPublicKey_RSA2_rotated.crt","key":"$v/alipayCertPrivateKey_RSA2_rotated.pem"}'
  curl -s 'http://127.0.0.1:$simport/_sim/calls?method=alipay.open.app.alipaycert.download'
(alipayCertPublicKey_RSA2_unknown_ca.crt or _expired.crt with their keys: certificates cardgate must refuse)
MSG
fi
