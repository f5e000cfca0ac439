#!/usr/bin/env bash
# Makes sure a RabbitMQ answers on 127.0.0.1:5672: installs Debian's rabbitmq-server if it is
# missing (needs root), starts it detached if it is not running, and waits until it is up; then
# enables the plugins logship needs (idempotent).
set -euo pipefail

port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

# Partitioned collector groups (broker.partitions > 1) need the x-consistent-hash exchange type,
# from a plugin bundled with RabbitMQ. Enabling an enabled plugin changes nothing.
enable_plugins() {
  if ! command -v rabbitmq-plugins >/dev/null 2>&1; then
    echo "rabbitmq-plugins not found: run 'rabbitmq-plugins enable rabbitmq_consistent_hash_exchange' on the broker" >&2
    return 0
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo rabbitmq-plugins -q enable rabbitmq_consistent_hash_exchange >/dev/null
  echo "RabbitMQ plugin rabbitmq_consistent_hash_exchange enabled"
}

if port_open; then
  echo "RabbitMQ answers on 127.0.0.1:5672"
  enable_plugins
  exit 0
fi

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "installing rabbitmq-server"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q rabbitmq-server
fi

if ! port_open; then
  echo "starting rabbitmq-server"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # Debian's package may start it itself (where systemd runs); otherwise start it detached.
  $sudo rabbitmq-server -detached || true
fi

for _ in $(seq 120); do
  if port_open && rabbitmqctl -q await_startup >/dev/null 2>&1; then
    echo "RabbitMQ is up on 127.0.0.1:5672"
    enable_plugins
    exit 0
  fi
  sleep 1
done
echo "RabbitMQ did not come up on 127.0.0.1:5672 within 120 s" >&2
exit 1
