"""Just enough pcapng (draft-ietf-opsawg-pcapng) to name interfaces and count what was captured.

Pure: bytes in, bytes or numbers out. A capture of several namespaces is one dumpcap per namespace
(a process sees one namespace's interfaces), and every container's interface is called `eth0`; so
before the files are merged each Interface Description Block gets a name that says where it was
(`if_name`, option 2) and a sentence that says what it is (`if_description`, option 3). With
distinct names `mergecap` keeps the interfaces apart instead of folding identical ones together.
Counts come from the Enhanced Packet Blocks and from the Interface Statistics Blocks dumpcap writes
at the end (`isb_ifrecv`, `isb_ifdrop`: the kernel's drop count, which a report must show).

`from_pcap` turns a classic pcap stream (what `tcpdump -w -` writes from a capture container on a
cluster Pi: tcpdump is 2 MB in the image, dumpcap 125 MB with libwireshark) into one such section,
its interface named and its statistics block written from the counts tcpdump printed at exit.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

SHB, IDB, EPB, SPB, ISB = 0x0A0D0D0A, 0x00000001, 0x00000006, 0x00000003, 0x00000005
BYTE_ORDER_MAGIC = 0x1A2B3C4D
OPT_END, OPT_IF_NAME, OPT_IF_DESCRIPTION = 0, 2, 3
OPT_ISB_IFRECV, OPT_ISB_IFDROP, OPT_ISB_OSDROP = 4, 5, 7
OPT_IF_TSRESOL = 9
PCAP_MAGIC = {0xA1B2C3D4: 6, 0xA1B23C4D: 9}  # classic pcap: microsecond or nanosecond timestamps


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


@dataclass(frozen=True)
class Converted:
    data: bytes  # one pcapng section: SHB, IDB, EPBs, ISB
    packets: int
    cut_bytes: int  # a last record the stream ended inside of (the writer was killed), left out


def from_pcap(data: bytes, name: str, description: str, received: int | None = None,
              dropped: int | None = None, os_dropped: int | None = None) -> Converted:
    """A classic pcap file as a pcapng section with one named interface (see module doc); the
    statistics block holds the counts that are known (None: the option is left out, as dumpcap
    does when the kernel gave none)."""
    if len(data) < 24:
        raise PcapngError(f"pcap stream of {len(data)} bytes: shorter than its 24-byte header")
    (magic,) = struct.unpack_from("<I", data, 0)
    order = "<"
    if magic not in PCAP_MAGIC:
        order, (magic,) = ">", struct.unpack_from(">I", data, 0)
        if magic not in PCAP_MAGIC:
            raise PcapngError(f"not a pcap stream (magic {data[:4].hex()})")
    resol = PCAP_MAGIC[magic]
    snaplen, linktype = struct.unpack_from(order + "II", data, 16)
    out = [_block_bytes(SHB, struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + struct.pack("<HH", OPT_END, 0)),
           _block_bytes(IDB, struct.pack("<HHI", linktype & 0xFFFF, 0, snaplen)
                        + _encode_option("<", OPT_IF_NAME, name.encode())
                        + _encode_option("<", OPT_IF_DESCRIPTION, description.encode())
                        + _encode_option("<", OPT_IF_TSRESOL, bytes([resol])) + struct.pack("<HH", OPT_END, 0))]
    scale = 10 ** resol
    off, packets, last = 24, 0, 0
    header = struct.Struct(order + "IIII")
    while off + 16 <= len(data):
        sec, frac, incl, orig = header.unpack_from(data, off)
        if off + 16 + incl > len(data):
            break
        ts = sec * scale + frac
        body = struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, incl, orig) + data[off + 16: off + 16 + incl]
        out.append(_block_bytes(EPB, body))
        off += 16 + incl
        packets, last = packets + 1, ts
    stats = b"".join(_encode_option("<", code, struct.pack("<Q", n)) for code, n in
                     ((OPT_ISB_IFRECV, received), (OPT_ISB_IFDROP, dropped), (OPT_ISB_OSDROP, os_dropped))
                     if n is not None)
    out.append(_block_bytes(ISB, struct.pack("<III", 0, last >> 32, last & 0xFFFFFFFF) + stats
                            + struct.pack("<HH", OPT_END, 0)))
    return Converted(b"".join(out), packets, len(data) - off)


def _block_bytes(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def add_statistics(data: bytes, counts: dict[str, tuple[int | None, int | None, int | None]]) -> bytes:
    """The file with an Interface Statistics Block appended for every interface of its last section
    that has none and whose name is in `counts` (name -> received, dropped, os_dropped). mergecap
    does not carry its inputs' statistics blocks over; without this a merged file would not show
    Wireshark the kernel's drop counts that each part held."""
    order = "<"
    names: list[str] = []  # interface names, by id
    has_stats: set[int] = set()  # ids that have a statistics block
    for o, btype, off, length in blocks(data):
        if btype == SHB:
            order, names, has_stats = o, [], set()
        elif btype == IDB:
            name = next((v.decode(errors="replace") for c, v in _options(data, o, off + 16, off + length - 4)
                         if c == OPT_IF_NAME), "")
            names.append(name)
        elif btype == ISB:
            has_stats.add(struct.unpack_from(o + "I", data, off + 8)[0])
    out = bytearray(data)
    for if_id, name in enumerate(names):
        if if_id in has_stats or name not in counts:
            continue
        opts = b"".join(_encode_option(order, code, struct.pack(order + "Q", n)) for code, n in
                        zip((OPT_ISB_IFRECV, OPT_ISB_IFDROP, OPT_ISB_OSDROP), counts[name], strict=True)
                        if n is not None)
        body = struct.pack(order + "III", if_id, 0, 0) + opts + struct.pack(order + "HH", OPT_END, 0)
        out += struct.pack(order + "II", ISB, 12 + len(body)) + body + struct.pack(order + "I", 12 + len(body))
    return bytes(out)
