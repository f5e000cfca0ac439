#!/usr/bin/env bash
# Builds the four packages: logship-agent and logship-collector, each as .deb and .rpm, into
# target/packages/. Installs cargo-deb and cargo-generate-rpm first if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
command -v cargo-generate-rpm >/dev/null || cargo install --locked cargo-generate-rpm

cargo build --release -p logship-agent -p logship-collector
out=target/packages
mkdir -p "$out"
for package in logship-agent logship-collector; do
  cargo deb --no-build -p "$package" -o "$out/"
  cargo generate-rpm -p "${package#logship-}" -o "$out/"
done
ls -l "$out"
