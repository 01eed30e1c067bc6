#!/usr/bin/env python3
"""Writes the region target's seeds (corpus/region/seed-*): a valid header page with cookie
keys, an identity map's payload, and a map area's first copy. Recomputes the region's checksum
(dataplane/src/region.rs) independently, so a seed that stops parsing means the format moved."""
import struct
from pathlib import Path

M = (1 << 64) - 1


def mix64(x):
    x ^= x >> 33
    x = (x * 0xff51afd7ed558ccd) & M
    x ^= x >> 33
    x = (x * 0xc4ceb9fe1a85ec53) & M
    x ^= x >> 33
    return x


def checksum(b):
    h = mix64((len(b) ^ 0x5eed5e5510110000) & M)
    whole = len(b) // 8 * 8
    for i in range(0, whole, 8):
        h = mix64(h ^ struct.unpack_from("<Q", b, i)[0])
    tail = b[whole:] + bytes(8 - len(b) + whole)
    return mix64(h ^ struct.unpack("<Q", tail)[0])


def header(slots=64):
    fixed = b"SLUICE\0R" + struct.pack("<IIQQQQQQ", 2, 0, slots, slots // 2, 1, 2, 3, 42)
    page = bytearray(fixed + struct.pack("<Q", checksum(fixed)))
    keys = struct.pack("<6Q", 1, 2, 3, 4, 5, 6)
    page += keys + struct.pack("<Q", checksum(keys))
    return bytes(page) + bytes(4096 - len(page))


def ids():
    v4 = (0xffff << 32) | 0xc6120a01
    b = struct.pack("<IIII", 1, 1, 1, 1)
    b += v4.to_bytes(16, "little") + struct.pack("<HBBH", 80, 6, 0, 0)
    b += struct.pack("<H", 0) + ((0xffff << 32) | 0xc613000a).to_bytes(16, "little") + struct.pack("<HI", 0, 0)
    return b


out = Path(__file__).resolve().parent / "corpus" / "region"
out.mkdir(parents=True, exist_ok=True)
(out / "seed-header").write_bytes(header())
(out / "seed-ids").write_bytes(ids())
p = ids()
(out / "seed-copy").write_bytes(struct.pack("<QQQ", 1, len(p), checksum(p)) + p)
