"""OpenFlow versions: the names OVS, os-ken and users give them, and the handshake verdict.

Why one module: the same version appears as `13` on our command line, `OpenFlow13` in OVS's
`protocols` column, `0x04` on the wire and in os-ken's `OFP_VERSIONS`, and `1.3` in what we print.
Every conversion lives here, pure, so `picloud up`'s per-switch diagnosis ("s1: the app wants
OpenFlow 1.4, the bridge offers 1.3") is unit-tested without a switch.
"""

from __future__ import annotations

from collections.abc import Iterable

from picloud.errors import FabricError

# Command-line spelling -> wire version (ofp_header.version). OpenFlow 1.1 is in OVS but not in
# os-ken (no ofproto_v1_1), so no app can ask for it; bridges still offer it when asked.
WIRE: dict[str, int] = {"10": 0x01, "11": 0x02, "12": 0x03, "13": 0x04, "14": 0x05, "15": 0x06}
DEFAULT = ("10", "11", "12", "13", "14", "15")  # OVS 3.1 speaks all six


def parse_versions(text: str | Iterable[str] | None, option: str = "--of-versions") -> list[str]:
    """'13,14' (or ['1.3', 'OpenFlow14']) -> ['13', '14'], sorted; None -> all six."""
    if text is None:
        return list(DEFAULT)
    items = text.split(",") if isinstance(text, str) else list(text)
    out: set[str] = set()
    for raw in items:
        item = str(raw).strip()
        key = item.removeprefix("OpenFlow").replace(".", "")
        if key not in WIRE:
            raise FabricError(f"{option} {item!r}: not an OpenFlow version "
                              f"(use {','.join(DEFAULT)}, for example {option} 13,14)")
        out.add(key)
    if not out:
        raise FabricError(f"{option}: empty (use {','.join(DEFAULT)}, for example {option} 13,14)")
    return sorted(out)


def ovs_protocols(versions: Iterable[str]) -> list[str]:
    """['13', '14'] -> ['OpenFlow13', 'OpenFlow14'] for OVS's Bridge `protocols` column."""
    return [f"OpenFlow{v}" for v in versions]


def label(version: str | int) -> str:
    """'13' or 0x04 -> '1.3'."""
    if isinstance(version, int):
        version = next(k for k, w in WIRE.items() if w == version)
    return f"{version[0]}.{version[1]}"


def labels(versions: Iterable[str | int]) -> str:
    """['13', '14'] -> '1.3 and 1.4'; six in a row -> '1.0-1.5'."""
    items = sorted({label(v) for v in versions})
    if len(items) > 2 and len(items) == len(WIRE) and items == [label(v) for v in DEFAULT]:
        return f"{items[0]}-{items[-1]}"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def from_wire(version: int) -> str:
    return next(k for k, w in WIRE.items() if w == version)


def negotiated(app_wants: Iterable[int], bridge_offers: Iterable[str]) -> int | None:
    """The wire version a bridge and an os-ken controller settle on, or None when they cannot.

    os-ken says hello with its highest version only (no bitmap); the switch answers with its
    bitmap, so the usable versions are the intersection and the highest common one wins, except
    that os-ken refuses when its hello's version is above every version the switch has but the
    switch's highest below it is not one the controller supports (see os-ken's ofp_handler)."""
    wants = set(app_wants)
    offers = {WIRE[v] for v in bridge_offers}
    common = wants & offers
    if not common:
        return None
    below = {v for v in offers if v <= max(wants)}
    if below and max(below) != max(common):
        return None
    return max(common)


def mismatch_reason(node: str, app_wants: Iterable[int], bridge_offers: Iterable[str]) -> str | None:
    """The one line for a switch that cannot speak to the controller's apps, or None if it can."""
    wants = sorted(set(app_wants))
    if negotiated(wants, bridge_offers) is not None:
        return None
    offers = list(bridge_offers)
    common = {WIRE[v] for v in offers} & set(wants)
    if common:  # os-ken's own limitation: it negotiates down to a version the apps do not take
        return (f"{node}: the app wants OpenFlow {labels(wants)}, the bridge offers {labels(offers)}; "
                f"os-ken only negotiates down to the bridge's highest version below "
                f"{label(max(wants))} (offer {labels(common)} only: --of-versions "
                f"{','.join(from_wire(v) for v in sorted(common))})")
    return f"{node}: the app wants OpenFlow {labels(wants)}, the bridge offers {labels(offers)}"
