#!/usr/bin/env bash
# Idempotent setup for a fresh Debian/Ubuntu/Raspberry Pi OS box, as root: installs only what is
# missing, makes the venv at .venv, and starts the daemons PiCloud needs (OVS always; dockerd when
# PICLOUD_DOCKER=1 or the docker tests are to run). Re-running it costs seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*"; }
[ "$(id -u)" -eq 0 ] || { echo "setup: error: run as root (PiCloud creates namespaces, veths and OVS bridges)" >&2; exit 2; }

PKGS=(openvswitch-switch openvswitch-testcontroller iproute2 iputils-ping ethtool iperf3 tcpdump tshark
      python3-venv python3-dev chromium docker.io debootstrap busybox-static mininet curl)
[ -n "${PICLOUD_EXTRA_PKGS:-}" ] && read -r -a extra <<<"$PICLOUD_EXTRA_PKGS" && PKGS+=("${extra[@]}")
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python venv with the pinned requirements; reinstalled only when requirements or pyproject change.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.picloud-installed
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python requirements"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi

# Open vSwitch. On the userspace datapath TCP needs userspace TSO (set before ovs-vswitchd
# starts); on the kernel datapath the setting is harmless.
OVSCTL=/usr/share/openvswitch/scripts/ovs-ctl
tso=$(ovs-vsctl --timeout=3 get Open_vSwitch . other_config:userspace-tso-enable 2>/dev/null || true)
if ! ovs-vsctl --timeout=3 show >/dev/null 2>&1; then
  say "starting Open vSwitch"
  "$OVSCTL" start --system-id=random >/dev/null 2>&1 || "$OVSCTL" start >/dev/null
  tso=$(ovs-vsctl --timeout=3 get Open_vSwitch . other_config:userspace-tso-enable 2>/dev/null || true)
fi
if [ "$tso" != '"true"' ]; then
  ovs-vsctl set Open_vSwitch . other_config:userspace-tso-enable=true
  if [ -z "$(ovs-vsctl list-br)" ]; then
    say "enabling OVS userspace TSO (restarting ovs-vswitchd; no bridges exist)"
    "$OVSCTL" restart --system-id=random >/dev/null 2>&1 || "$OVSCTL" restart >/dev/null
  else
    say "notice: OVS userspace TSO set; it takes effect when ovs-vswitchd restarts (bridges exist, not restarting)"
  fi
fi

# Docker engine, for --containers docker and its tests.
if command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
  say "starting dockerd"
  mkdir -p /var/log/picloud
  nohup dockerd >/var/log/picloud/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || say "notice: dockerd did not start (see /var/log/picloud/dockerd.log); docker tests will skip"
fi
say "ready"
