#!/usr/bin/env bash
# Quick start: build, make sure a local RabbitMQ is up, run a collector with the example config
# (paths moved under ./demo), ship a few lines to it, and show what it wrote.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building"
cargo build --release --workspace --examples

echo "== making sure RabbitMQ answers on 127.0.0.1:5672"
bash scripts/ensure-rabbitmq.sh

demo="$PWD/demo"
mkdir -p "$demo"
sed -e "s|/var/lib/logship-collector|$demo/collector-state|" \
    -e "s|/srv/logs|$demo/out|" \
    -e 's|queue = "logs.archive"|queue = "logs.demo"|' \
    config/collector.toml > "$demo/collector.toml"
target/release/logship-collector --check-config "$demo/collector.toml"

echo "== starting logship-collector (log: demo/collector.log)"
target/release/logship-collector --config "$demo/collector.toml" 2> "$demo/collector.log" &
collector=$!
trap 'kill -TERM $collector 2>/dev/null; wait $collector 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q consuming "$demo/collector.log" && break; sleep 0.1; done

echo "== shipping 5 lines as host demo-host, file /var/log/demo/app.log"
for i in 1 2 3 4 5; do echo "$(date -u +%FT%TZ) demo line $i"; done |
  target/release/examples/send_lines "amqp://guest:guest@127.0.0.1:5672/%2f" logs demo-host /var/log/demo/app.log

out="$demo/out/demo-host/var/log/demo/app.log"
for _ in $(seq 50); do [ -s "$out" ] && [ "$(wc -l < "$out")" -ge 5 ] && break; sleep 0.1; done
echo "== $out now holds:"
tail -n 5 "$out"
echo "== stopping the collector (SIGTERM: commits and acks, exits 0)"
