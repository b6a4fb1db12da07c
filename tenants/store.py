"""The tenant plan on disk: one YAML file per run (RunState `tenants_file`).

The file is the single source of truth the controller reads at start and on `POST
/tenants/reload`, so a restarted controller restores exactly the same rules. Writes go to a
temporary file that replaces the old one atomically, so a reader never sees half a plan.
Loading validates everything and names the offending key in a one-line `TenantError`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from picloud.errors import TenantError
from tenants.model import Member, Tenant, TenantPlan, make_subnet
from tenants.plan import parse_rate, validate

if TYPE_CHECKING:
    from picloud.runstate import RunState

TENANT_KEYS = {"name", "id", "subnets", "rate", "members", "next_index"}
MEMBER_KEYS = {"name", "pi", "ip", "mac", "subnet", "port"}


def _mapping(value: Any, where: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TenantError(f"{where}: expected a mapping with keys {', '.join(sorted(required))}")
    unknown = set(value) - allowed
    if unknown:
        raise TenantError(f"{where}: unknown key {sorted(unknown)[0]!r} "
                          f"(allowed: {', '.join(sorted(allowed))})")
    missing = required - set(value)
    if missing:
        raise TenantError(f"{where}: missing key {sorted(missing)[0]!r}")
    return value


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TenantError(f"{where}: {value!r} is not a whole number")
    return value


def plan_from_dict(data: Any, where: str = "tenants") -> TenantPlan:
    """Inverse of `TenantPlan.to_dict()`, validated."""
    if data is None:
        return TenantPlan()
    from topology.model import refuse_control_chars

    refuse_control_chars(data, where, TenantError)
    data = _mapping(data, where, {"version", "tenants", "peerings"}, set())
    if data.get("version", 1) != 1:
        raise TenantError(f"{where}: version {data.get('version')!r} is not supported (expected 1)")
    raw_tenants = data.get("tenants") or []
    if not isinstance(raw_tenants, list):
        raise TenantError(f"{where}: 'tenants' must be a list")
    tenants = []
    for i, raw in enumerate(raw_tenants):
        w = f"{where}: tenants[{i}]"
        raw = _mapping(raw, w, TENANT_KEYS, {"name", "id", "subnets"})
        w = f"{where}: tenant {raw['name']!r}"
        subnets_raw = raw["subnets"]
        if isinstance(subnets_raw, str):
            subnets_raw = [subnets_raw]
        if not isinstance(subnets_raw, list) or not subnets_raw:
            raise TenantError(f"{w}: 'subnets' must be a non-empty list")
        subnets = []
        for s in subnets_raw:
            if isinstance(s, str):
                subnets.append(make_subnet(s, where=w))
            else:
                s = _mapping(s, f"{w}: subnet", {"cidr", "gateway"}, {"cidr"})
                subnets.append(make_subnet(s["cidr"], s.get("gateway"), where=w))
        members = []
        for j, m in enumerate(raw.get("members") or []):
            m = _mapping(m, f"{w}: members[{j}]", MEMBER_KEYS, {"name", "pi", "ip", "mac"})
            ip, mac = str(m["ip"]), str(m["mac"]).lower()
            cidr = m.get("subnet")
            if cidr is None:
                owner = next((s for s in subnets if s.contains(ip)), None)
                cidr = owner.cidr if owner else "?"
            port = m.get("port")
            if port is not None:
                port = _int(port, f"{w}: member {m['name']!r}: port")
            members.append(Member(name=str(m["name"]), pi=str(m["pi"]), ip=ip, mac=mac, subnet=str(cidr),
                                  port=port))
        next_index = raw.get("next_index")
        if next_index is None:
            next_index = len(members) + 1
        tenants.append(Tenant(name=raw["name"], id=raw["id"], subnets=tuple(subnets),
                              rate=parse_rate(raw.get("rate"), w), members=tuple(members),
                              next_index=_int(next_index, f"{w}: next_index")))
    peerings = []
    for p in data.get("peerings") or []:
        if not (isinstance(p, list | tuple) and len(p) == 2 and all(isinstance(x, str) for x in p)):
            raise TenantError(f"{where}: peering {p!r} must be a pair of tenant names")
        peerings.append(tuple(sorted(p)))
    plan = TenantPlan(tenants=tuple(tenants), peerings=tuple(peerings))
    return validate(plan, where=where)


def load(path: str | Path) -> TenantPlan:
    """Read and validate a plan; a missing file is an empty plan (no tenants yet)."""
    path = Path(path)
    if not path.exists():
        return TenantPlan()
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        raise TenantError(f"{path}:{at}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return plan_from_dict(data, where=str(path))


def dumps(plan: TenantPlan) -> str:
    return yaml.safe_dump(plan.to_dict(), sort_keys=False, default_flow_style=None)


def save(plan: TenantPlan, path: str | Path) -> None:
    """Atomically replace the file (write a sibling temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(dumps(plan))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_tenants_path(state: RunState) -> Path:
    """Where a run keeps its plan: beside its RunState file, `STATE_DIR/PREFIX.tenants.yaml`, so
    `picloud clean` and `Testbed.down()` find it with the rest of the run. An empty plan is
    written there if there is no file yet: the controller is pointed at it (and checks that it
    exists) before the first tenant is created."""
    path = Path(state.path).parent / f"{state.prefix}.tenants.yaml"
    if not path.exists():
        save(TenantPlan(), path)
    return path
