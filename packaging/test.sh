#!/usr/bin/env bash
# Builds the packages and checks them for real (as root): the .debs install with dpkg, their
# files land where the units expect them, the packaged binaries run --version, --help and
# --check-config (both forms) on the installed configs, the man pages and completions are
# installed, an edited config and the state survive a reinstall; the .rpms' file lists and scripts are read with rpm. Purges what it installed.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "packaging test: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "run as root (it installs the packages)"
command -v rpm >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q rpm; }

bash packaging/build.sh
out=target/packages
cleanup() { dpkg -P logship-agent logship-collector >/dev/null 2>&1 || true; }
trap cleanup EXIT

for name in agent collector; do
  package=logship-$name
  deb=$(ls "$out"/${package}_*.deb)
  rpmfile=$(ls "$out"/${package}-*.rpm)
  echo "== $deb"
  DEBIAN_FRONTEND=noninteractive dpkg -i --force-confdef --force-confold "$deb"
  for file in /usr/bin/$package /etc/logship/$name.toml /usr/lib/systemd/system/$package.service; do
    [ -e "$file" ] || fail "$file missing after installing $deb"
  done
  grep -q "^ExecStart=/usr/bin/$package --config /etc/logship/$name.toml" /usr/lib/systemd/system/$package.service \
    || fail "$package.service does not run the installed binary on the installed config"
  dpkg-query -W -f='${Conffiles}\n' "$package" | grep -q "/etc/logship/$name.toml" || fail "$name.toml is not a conffile"
  getent passwd logship >/dev/null || fail "user logship not created"
  if [ "$name" = agent ]; then
    # The journal input reads the system journal as a member of systemd-journal.
    grep -q "^SupplementaryGroups=.*systemd-journal" /usr/lib/systemd/system/$package.service \
      || fail "$package.service does not give the journal's group"
  fi
  [ "$(stat -c %G /etc/logship/$name.toml)" = logship ] || fail "$name.toml is not group logship"
  /usr/bin/$package --version | grep -q "^$package " || fail "$package --version"
  /usr/bin/$package --check-config /etc/logship/$name.toml || fail "$package --check-config on the installed config"
  /usr/bin/$package --config /etc/logship/$name.toml --check-config || fail "$package --config FILE --check-config"
  /usr/bin/$package --help | grep -q -- "--check-config" || fail "$package --help"
  pages="$package $package-status"
  [ "$package" = logship-collector ] && pages="$pages $package-audit"
  for page in $pages; do
    zcat /usr/share/man/man1/$page.1.gz | grep -q '^\.TH' || fail "man page $page(1) missing or empty"
  done
  [ -s /usr/share/bash-completion/completions/$package ] || fail "bash completion of $package missing"
  if command -v systemd-analyze >/dev/null; then
    report=$(systemd-analyze verify /usr/lib/systemd/system/$package.service 2>&1) || fail "systemd-analyze: $report"
    [ -z "$report" ] || fail "systemd-analyze warns: $report"
  fi
  # An edited config and the state survive a reinstall (upgrade path).
  echo "# edited by the operator" >> /etc/logship/$name.toml
  state=/var/lib/$package
  touch "$state/kept"
  DEBIAN_FRONTEND=noninteractive dpkg -i --force-confdef --force-confold "$deb"
  grep -q "edited by the operator" /etc/logship/$name.toml || fail "edited $name.toml replaced on reinstall"
  [ -e "$state/kept" ] || fail "$state lost on reinstall"
  echo "== $rpmfile"
  files=$(rpm -qpl "$rpmfile")
  for file in /usr/bin/$package /etc/logship/$name.toml /usr/lib/systemd/system/$package.service; do
    grep -qx "$file" <<<"$files" || fail "$file missing from $rpmfile"
  done
  grep -qx "/usr/share/man/man1/$package.1.gz" <<<"$files" || fail "man page missing from $rpmfile"
  rpm -qp --configfiles "$rpmfile" | grep -qx "/etc/logship/$name.toml" || fail "$name.toml is not %config in $rpmfile"
  rpm -qp --scripts "$rpmfile" | grep -q "useradd -r -g logship" || fail "$rpmfile creates no user"
done
echo "packaging test: ok"
