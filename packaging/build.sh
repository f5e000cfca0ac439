#!/usr/bin/env bash
# Builds the four packages: logship-agent and logship-collector, each as .deb and .rpm, into
# target/packages/. Installs cargo-deb and cargo-generate-rpm first if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
command -v cargo-generate-rpm >/dev/null || cargo install --locked cargo-generate-rpm

cargo build --release -p logship-agent -p logship-collector
# Man pages and shell completions come from the binaries' own clap definition (hidden --man
# and --completions flags), so they always match the command line that ships.
mkdir -p target/release/man target/release/completions
for bin in logship-agent logship-collector; do
  target/release/$bin --man | gzip -9n > target/release/man/$bin.1.gz
  target/release/$bin --man status | gzip -9n > target/release/man/$bin-status.1.gz
  target/release/$bin --completions bash > target/release/completions/$bin
  target/release/$bin --completions zsh > target/release/completions/_$bin
  target/release/$bin --completions fish > target/release/completions/$bin.fish
done
target/release/logship-collector --man audit | gzip -9n > target/release/man/logship-collector-audit.1.gz
out=target/packages
mkdir -p "$out"
for package in logship-agent logship-collector; do
  cargo deb --no-build -p "$package" -o "$out/"
  cargo generate-rpm -p "${package#logship-}" -o "$out/"
done
ls -l "$out"
