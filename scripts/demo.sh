#!/usr/bin/env bash
# Quick start: build, make sure a local RabbitMQ is up, run a collector and an agent with the
# example configs (paths moved under ./demo), write lines to a demo log, and show them arriving.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building"
cargo build --release --workspace

echo "== making sure RabbitMQ answers on 127.0.0.1:5672"
bash scripts/ensure-rabbitmq.sh

demo="$PWD/demo"
mkdir -p "$demo/logs"
sed -e "s|/var/lib/logship-collector|$demo/collector-state|" \
    -e "s|/srv/logs|$demo/out|" \
    -e 's|queue = "logs.archive"|queue = "logs.demo"|' \
    config/collector.toml > "$demo/collector.toml"
sed -e "s|/var/lib/logship-agent|$demo/agent-state|" \
    -e "s|/var/log/app/\*.log|$demo/logs/*.log|" \
    -e 's|^# host = "web-1"|host = "demo-host"|' \
    config/agent.toml > "$demo/agent.toml"
target/release/logship-collector --check-config "$demo/collector.toml"
target/release/logship-agent --check-config "$demo/agent.toml"

echo "== starting logship-collector and logship-agent (logs: demo/collector.log, demo/agent.log)"
target/release/logship-collector --config "$demo/collector.toml" 2>> "$demo/collector.log" &
collector=$!
target/release/logship-agent --config "$demo/agent.toml" 2>> "$demo/agent.log" &
agent=$!
trap 'kill -TERM $agent $collector 2>/dev/null; wait $agent $collector 2>/dev/null || true' EXIT

echo "== writing 5 lines to demo/logs/app.log"
for i in 1 2 3 4 5; do echo "$(date -u +%FT%TZ) demo line $i" >> "$demo/logs/app.log"; sleep 0.2; done

out="$demo/out/demo-host$demo/logs/app.log"
for _ in $(seq 100); do [ -s "$out" ] && [ "$(wc -l < "$out")" -ge 5 ] && break; sleep 0.1; done
echo "== the collector wrote $out:"
tail -n 5 "$out"
echo "== stopping both (SIGTERM: the agent drains its confirms, the collector commits and acks)"
