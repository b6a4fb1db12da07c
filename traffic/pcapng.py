"""Just enough pcapng (draft-ietf-opsawg-pcapng) to name interfaces and count what was captured.

Pure: bytes in, bytes or numbers out. A capture of several namespaces is one dumpcap per namespace
(a process sees one namespace's interfaces), and every container's interface is called `eth0`; so
before the files are merged each Interface Description Block gets a name that says where it was
(`if_name`, option 2) and a sentence that says what it is (`if_description`, option 3). With
distinct names `mergecap` keeps the interfaces apart instead of folding identical ones together.
Counts come from the Enhanced Packet Blocks and from the Interface Statistics Blocks dumpcap writes
at the end (`isb_ifrecv`, `isb_ifdrop`: the kernel's drop count, which a report must show).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

SHB, IDB, EPB, SPB, ISB = 0x0A0D0D0A, 0x00000001, 0x00000006, 0x00000003, 0x00000005
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_END, OPT_IF_NAME, OPT_IF_DESCRIPTION = 0, 2, 3
OPT_ISB_IFRECV, OPT_ISB_IFDROP, OPT_ISB_OSDROP = 4, 5, 7


class PcapngError(ValueError):
    pass


@dataclass
class InterfaceStats:
    name: str = ""
    description: str = ""
    packets: int = 0  # packet blocks in the file
    bytes: int = 0  # original lengths
    received: int | None = None  # isb_ifrecv
    dropped: int | None = None  # isb_ifdrop (kernel)
    os_dropped: int | None = None  # isb_osdrop


@dataclass
class Section:
    interfaces: list[InterfaceStats] = field(default_factory=list)


def blocks(data: bytes) -> Iterator[tuple[str, int, int, int]]:
    """(byte order, block type, offset, total length) for every block; sections may differ in
    byte order, as the format allows."""
    off, order = 0, "<"
    while off < len(data):
        if len(data) - off < 12:
            raise PcapngError(f"truncated block at byte {off}")
        (btype,) = struct.unpack_from("<I", data, off)
        if btype == SHB:
            (magic,) = struct.unpack_from("<I", data, off + 8)
            order = "<" if magic == BYTE_ORDER_MAGIC else ">"
            if struct.unpack_from(order + "I", data, off + 8)[0] != BYTE_ORDER_MAGIC:
                raise PcapngError(f"bad byte-order magic at byte {off}")
        btype, length = struct.unpack_from(order + "II", data, off)
        if length < 12 or length % 4 or off + length > len(data):
            raise PcapngError(f"bad block length {length} at byte {off}")
        yield order, btype, off, length
        off += length


def _options(data: bytes, order: str, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    off = start
    while off + 4 <= end:
        code, length = struct.unpack_from(order + "HH", data, off)
        if code == OPT_END:
            return
        yield code, data[off + 4: off + 4 + length]
        off += 4 + length + (-length % 4)


def _encode_option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def rename_interfaces(data: bytes, names: Sequence[tuple[str, str]]) -> bytes:
    """The file with its IDBs (in order, across sections) named `names[i] = (if_name,
    if_description)`; every other option and block is kept as it was."""
    out, index = bytearray(), 0
    for order, btype, off, length in blocks(data):
        if btype != IDB or index >= len(names):
            out += data[off: off + length]
            continue
        fixed = data[off + 8: off + 16]  # linktype, reserved, snaplen
        kept = b"".join(_encode_option(order, c, v) for c, v in _options(data, order, off + 16, off + length - 4)
                        if c not in (OPT_IF_NAME, OPT_IF_DESCRIPTION))
        name, description = names[index]
        body = (fixed + _encode_option(order, OPT_IF_NAME, name.encode()) +
                _encode_option(order, OPT_IF_DESCRIPTION, description.encode()) + kept +
                struct.pack(order + "HH", OPT_END, 0))
        total = 12 + len(body)
        out += struct.pack(order + "II", IDB, total) + body + struct.pack(order + "I", total)
        index += 1
    return bytes(out)


def interfaces(data: bytes) -> list[InterfaceStats]:
    """Every interface of the file (sections concatenated) with its counts."""
    found: list[InterfaceStats] = []
    base = 0  # interface ids restart per section
    for order, btype, off, length in blocks(data):
        end = off + length - 4
        if btype == SHB:
            base = len(found)
        elif btype == IDB:
            st = InterfaceStats()
            for code, value in _options(data, order, off + 16, end):
                if code == OPT_IF_NAME:
                    st.name = value.decode(errors="replace")
                elif code == OPT_IF_DESCRIPTION:
                    st.description = value.decode(errors="replace")
            found.append(st)
        elif btype == EPB:
            if_id, _hi, _lo, _cap, orig = struct.unpack_from(order + "IIIII", data, off + 8)
            st = found[base + if_id]
            st.packets += 1
            st.bytes += orig
        elif btype == SPB:
            (orig,) = struct.unpack_from(order + "I", data, off + 8)
            found[base].packets += 1
            found[base].bytes += orig
        elif btype == ISB:
            (if_id,) = struct.unpack_from(order + "I", data, off + 8)
            st = found[base + if_id]
            for code, value in _options(data, order, off + 20, end):
                if len(value) == 8 and code in (OPT_ISB_IFRECV, OPT_ISB_IFDROP, OPT_ISB_OSDROP):
                    (n,) = struct.unpack(order + "Q", value)
                    if code == OPT_ISB_IFRECV:
                        st.received = n
                    elif code == OPT_ISB_IFDROP:
                        st.dropped = n
                    else:
                        st.os_dropped = n
    return found
