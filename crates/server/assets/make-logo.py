#!/usr/bin/python3
"""Draws the server's default avatar (logo.png, 128x128): a speech bubble on a rounded square.

Standard library only (zlib + struct), so it runs anywhere: python3 make-logo.py > logo.png
With a size, the same drawing at that size, antialiased (the portal's icons):
python3 make-logo.py 192 > android-chrome-192x192.png
"""
import struct
import sys
import zlib

SIZE = 128
BG = (0x2F, 0x6F, 0xB5)      # blue
FG = (0xFF, 0xFF, 0xFF)      # white
DOT = (0x2F, 0x6F, 0xB5)


def inside_rounded(x, y, x0, y0, x1, y1, r):
    if x < x0 or x > x1 or y < y0 or y > y1:
        return False
    cx = min(max(x, x0 + r), x1 - r)
    cy = min(max(y, y0 + r), y1 - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def pixel(x, y):
    if not inside_rounded(x, y, 0, 0, SIZE - 1, SIZE - 1, 24):
        return (0, 0, 0, 0)
    # The bubble: a rounded rectangle with a tail at the bottom left.
    bubble = inside_rounded(x, y, 22, 28, 106, 86, 18)
    tail = 34 <= x <= 58 and 80 <= y <= 102 and (x - 34) >= (y - 80) * 0.3 and (58 - x) >= (y - 80) * 1.1
    if bubble or tail:
        for cx in (44, 64, 84):
            if (x - cx) ** 2 + (y - 57) ** 2 <= 49:
                return DOT + (255,)
        return FG + (255,)
    return BG + (255,)


def chunk(kind, data):
    c = struct.pack(">I", len(data)) + kind + data
    return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def sampled(x, y, out):
    """Pixel (x, y) of an out x out image: the average of 4x4 samples of the 128-unit drawing."""
    acc = [0, 0, 0, 0]
    for i in range(4):
        for j in range(4):
            r, g, b, a = pixel((x + (i + 0.5) / 4) * SIZE / out, (y + (j + 0.5) / 4) * SIZE / out)
            acc = [acc[0] + r * a, acc[1] + g * a, acc[2] + b * a, acc[3] + a]
    if acc[3] == 0:
        return (0, 0, 0, 0)
    return tuple(round(c / acc[3]) for c in acc[:3]) + (round(acc[3] / 16),)


OUT = int(sys.argv[1]) if len(sys.argv) > 1 else SIZE
if OUT == SIZE:
    rows = b"".join(b"\x00" + bytes(v for x in range(SIZE) for v in pixel(x, y)) for y in range(SIZE))
else:
    rows = b"".join(b"\x00" + bytes(v for x in range(OUT) for v in sampled(x, y, OUT)) for y in range(OUT))
png = (b"\x89PNG\r\n\x1a\n"
       + chunk(b"IHDR", struct.pack(">IIBBBBB", OUT, OUT, 8, 6, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(rows, 9))
       + chunk(b"IEND", b""))
sys.stdout.buffer.write(png)
