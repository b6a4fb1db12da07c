"""`TenantHandle`: tenants on a running testbed (what `Testbed.tenant()` returns).

    blue = tb.tenant("blue", subnet="10.0.0.0/24", rate=20)
    blue.add(8, placement="spread")
    blue.remove("blue-3")
    blue.delete()

Every change is: compute the new plan (pure, validated: a bad request raises before anything
happens), realise it on the fabric, save the YAML atomically, and `POST /tenants/reload` so the
controller applies only the difference. Additions create containers first (their Pi port goes into
the plan), then rules; removals withdraw the rules first, then the containers. A lock file beside
the YAML serialises changes from concurrent CLI calls.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from picloud.controller_client import ControllerClient, ControllerHTTPError
from picloud.errors import ControllerError, PiCloudError, TenantError
from tenants import plan as planner
from tenants import store
from tenants.model import Member, Tenant, TenantPlan
from topology.backends.base import fabric_of, state_of
from topology.stalls import OVS_STALL_S

if TYPE_CHECKING:
    from topology.backends.base import Run
    from topology.model import Topology

log = logging.getLogger(__name__)
# The controller waits up to OVS_STALL_S for routing to send the members' paths, then as long for
# the barriers (controller_apps/tenancy.py): the answer comes within twice that, plus a margin.
RELOAD_TIMEOUT = 2 * OVS_STALL_S + 30.0


def plan_path(testbed: Run) -> Path:
    """The run's tenants YAML, recorded in RunState `tenants_file` the first time it is needed."""
    state = state_of(testbed)
    if not state.tenants_file:
        state.tenants_file = str(store.run_tenants_path(state))
        state.save()
    return Path(state.tenants_file)


@contextmanager
def locked_plan(testbed: Run) -> Iterator[Path]:
    path = plan_path(testbed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _controller(testbed: Run) -> ControllerClient:
    client = testbed.controller_client
    if client is None:
        raise TenantError(f"run {testbed.prefix}: tenants need PiCloud's controller with the tenancy app "
                          "(this run has none or an external one)")
    return client


def _ask(testbed: Run, method: str, path: str, timeout: float = 5.0) -> Any:
    """The controller's answer, or one TenantError line (404: the run's controller has no tenancy app)."""
    try:
        return _controller(testbed).request(method, path, timeout=timeout)
    except ControllerHTTPError as exc:
        if exc.status == 404:
            raise TenantError(f"run {testbed.prefix}: the controller runs without the tenancy app "
                              "(start the run with a tenants file, e.g. 'picloud up SPEC --tenants FILE')") from None
        raise TenantError(str(exc)) from None
    except ControllerError as exc:
        raise TenantError(str(exc)) from None


def check_tenancy(testbed: Run) -> None:
    """Fail before any side effect when the controller cannot apply tenant rules."""
    _ask(testbed, "GET", "/tenants")


def reload(testbed: Run) -> dict[str, Any]:
    """Ask the controller to apply the saved plan; returns its summary of what changed."""
    return _ask(testbed, "POST", "/tenants/reload", timeout=RELOAD_TIMEOUT)


def current_plan(testbed: Run) -> TenantPlan:
    return store.load(plan_path(testbed))


def drop_counts(testbed: Run) -> dict[str, int]:
    """Packets each tenant's members sent that the edge dropped (spoofed source, IPv6, 802.1Q...),
    as the tenancy app counts them from its drop rules (`GET /tenants/drops`)."""
    return {str(k): int(v) for k, v in _ask(testbed, "GET", "/tenants/drops", timeout=30).items()}


def _create_members(testbed: Run, plan: TenantPlan, tenant: Tenant, members: Sequence[Member]) -> TenantPlan:
    """Create the containers; on any failure remove the ones made so far and re-raise."""
    made: list[str] = []
    try:
        for m in members:
            subnet = tenant.subnet_of(m.ip)
            assert subnet is not None
            port = fabric_of(testbed).add_container(m.name, m.pi, m.ip, m.mac, subnet.prefixlen, subnet.gateway)
            made.append(m.name)
            plan = planner.set_port(plan, m.name, int(port))
    except BaseException:
        for name in reversed(made):
            try:
                fabric_of(testbed).remove_container(name)
            except PiCloudError:
                log.warning("could not remove half-created member %s", name)
        raise
    return plan


class TenantHandle:
    """One tenant of a running testbed. Creating the handle creates the tenant if it does not
    exist yet (then `subnet` is required); for an existing tenant a given `rate` replaces its
    limit and a given `subnet` must be one of its subnets."""

    def __init__(self, testbed: Run, name: str, subnet: str | Sequence[str] | None = None,
                 rate: float | None = None) -> None:
        self.testbed = testbed
        self.name = name
        with locked_plan(testbed) as path:
            plan = store.load(path)
            if plan.has(name):
                new = plan
                if subnet is not None:
                    wanted = [subnet] if isinstance(subnet, str) else list(subnet)
                    have = {s.cidr for s in plan.tenant(name).subnets}
                    for cidr in wanted:
                        if planner.make_subnet(cidr, where=f"tenant {name!r}").cidr not in have:
                            raise TenantError(f"tenant {name!r}: exists without subnet {cidr} "
                                              f"(its subnets: {', '.join(sorted(have))})")
                if rate is not None:
                    new = planner.set_rate(plan, name, rate)
            else:
                if subnet is None:
                    raise TenantError(f"tenant {name!r}: no such tenant (create it first: "
                                      "'picloud tenant create NAME --subnet CIDR' or tb.tenant(NAME, subnet=CIDR))")
                new = planner.create_tenant(plan, name, subnet, rate=rate, topology=testbed.topology)
            if new != plan:
                check_tenancy(testbed)
                store.save(new, path)
                reload(testbed)

    # --- reading ----------------------------------------------------------------------------------
    @property
    def tenant(self) -> Tenant:
        return current_plan(self.testbed).tenant(self.name)

    @property
    def members(self) -> list[Member]:
        return list(self.tenant.members)

    @property
    def id(self) -> int:
        return self.tenant.id

    def __repr__(self) -> str:
        return f"TenantHandle({self.name!r})"

    # --- changing ---------------------------------------------------------------------------------
    def add(self, count: int, placement: str | Sequence[str] = "spread", subnet: str | None = None,
            capacity: int = planner.DEFAULT_CAPACITY) -> list[Member]:
        """Add `count` members (containers `<tenant>-<n>`) placed by `placement`; returns them."""
        with locked_plan(self.testbed) as path:
            plan = store.load(path)
            new_plan, new = planner.add_members(plan, self.testbed.topology, self.name, count, placement,
                                                subnet=subnet, capacity=capacity)
            check_tenancy(self.testbed)
            tenant = new_plan.tenant(self.name)
            new_plan = _create_members(self.testbed, new_plan, tenant, new)
            try:
                store.save(new_plan, path)
                reload(self.testbed)
            except BaseException:
                for m in new:
                    fabric_of(self.testbed).remove_container(m.name)
                store.save(plan, path)
                raise
            return [new_plan.tenant(self.name).member(m.name) for m in new]

    def add_subnet(self, cidr: str, gateway: str | None = None) -> None:
        with locked_plan(self.testbed) as path:
            plan = planner.add_subnet(store.load(path), self.name, cidr, gateway)
            check_tenancy(self.testbed)
            store.save(plan, path)
            reload(self.testbed)

    def peer(self, other: str) -> None:
        """Allow traffic between this tenant and `other` through their gateways (explicit rule)."""
        with locked_plan(self.testbed) as path:
            plan = planner.add_peering(store.load(path), self.name, other)
            check_tenancy(self.testbed)
            store.save(plan, path)
            reload(self.testbed)

    def remove(self, *members: str | Member) -> list[Member]:
        """Remove the named members (all of them when none are named): rules first, then containers."""
        names = [m.name if isinstance(m, Member) else m for m in members]
        with locked_plan(self.testbed) as path:
            plan = store.load(path)
            new_plan, gone = planner.remove_members(plan, self.name, names)
            if not gone:
                return []
            check_tenancy(self.testbed)
            store.save(new_plan, path)
            reload(self.testbed)
            for m in gone:
                if m.port is not None:
                    fabric_of(self.testbed).remove_container(m.name)
            return gone

    def delete(self) -> None:
        """Remove every member and the tenant itself."""
        with locked_plan(self.testbed) as path:
            plan = store.load(path)
            gone = plan.tenant(self.name).members
            new_plan = planner.delete_tenant(plan, self.name)
            check_tenancy(self.testbed)
            store.save(new_plan, path)
            reload(self.testbed)
            for m in gone:
                if m.port is not None:
                    fabric_of(self.testbed).remove_container(m.name)


SPEC_KEYS = {"name", "id", "subnet", "subnets", "rate", "count", "placement"}


def load_tenants_file(testbed: Run, source: str | Path) -> TenantPlan:
    """Realise a tenants file on a freshly built run (`Testbed(..., tenants=FILE)`).

    The file is either a saved plan (`picloud tenant show --json` / the run's YAML: members with
    Pis, addresses and MACs) or a short spec, each tenant with `count` and `placement`:

        tenants:
          - {name: blue, subnet: 10.0.0.0/24, count: 8, placement: spread, rate: 20}
        peerings: [[blue, green]]
    """
    plan = plan_tenants_file(testbed.topology, source)
    with locked_plan(testbed) as path:
        check_tenancy(testbed)
        for tenant in plan.tenants:
            plan = _create_members(testbed, plan, plan.tenant(tenant.name), plan.tenant(tenant.name).members)
        store.save(plan, path)
        reload(testbed)
    return plan


def plan_tenants_file(topology: Topology, source: str | Path) -> TenantPlan:
    """Read and validate a tenants file against a topology, without touching any system: the
    Testbed calls it before building anything, so a bad file costs no fabric (and again when it
    realises the plan on the built run)."""
    source = Path(source)
    try:
        data = yaml.safe_load(source.read_text()) or {}
    except OSError as exc:
        raise TenantError(f"{source}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise TenantError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
    entries = data.get("tenants") if isinstance(data, dict) else None
    is_spec = isinstance(entries, list) and any(isinstance(e, dict) and ("count" in e or "id" not in e)
                                                for e in entries)
    if is_spec:
        plan = _plan_from_spec(topology, data, str(source))
    else:
        plan = store.plan_from_dict(data, where=str(source))
        planner.validate(plan, topology, where=str(source))
        plan = TenantPlan(tuple(t.with_members(tuple(_detached(m) for m in t.members)) for t in plan.tenants),
                          plan.peerings)
    return plan


def _detached(member: Member) -> Member:
    from dataclasses import replace

    return replace(member, port=None)  # ports belong to a run; this run assigns its own


def _plan_from_spec(topology: Topology, data: dict[str, Any], where: str) -> TenantPlan:
    unknown = set(data) - {"tenants", "peerings", "version"}
    if unknown:
        raise TenantError(f"{where}: unknown key {sorted(unknown)[0]!r} (allowed: tenants, peerings)")
    plan = TenantPlan()
    for i, entry in enumerate(data["tenants"]):
        if not isinstance(entry, dict) or "name" not in entry:
            raise TenantError(f"{where}: tenants[{i}]: expected a mapping with at least 'name' and 'subnet'")
        extra = set(entry) - SPEC_KEYS
        if extra:
            raise TenantError(f"{where}: tenant {entry['name']!r}: unknown key {sorted(extra)[0]!r} "
                              f"(allowed: {', '.join(sorted(SPEC_KEYS))})")
        name = entry["name"]
        subnets = entry.get("subnets", entry.get("subnet"))
        try:
            plan = planner.create_tenant(plan, name, subnets, rate=entry.get("rate"), tenant_id=entry.get("id"),
                                         topology=topology)
            placement = entry.get("placement", "spread")
            if isinstance(placement, str) and placement not in planner.PLACEMENTS:  # "pi1,pi2" or one Pi
                placement = [p.strip() for p in placement.split(",")]
            if entry.get("count"):
                plan, _ = planner.add_members(plan, topology, name, entry["count"], placement)
        except TenantError as exc:
            raise TenantError(f"{where}: {exc}") from None
    for pair in data.get("peerings") or []:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise TenantError(f"{where}: peering {pair!r} must be a pair of tenant names")
        try:
            plan = planner.add_peering(plan, pair[0], pair[1])
        except TenantError as exc:
            raise TenantError(f"{where}: {exc}") from None
    return plan
