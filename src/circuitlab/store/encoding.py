"""How activations are stored: the precision they are rounded to, and the codec that compresses them.

Precision (``RecordConfig.precision``, ``record --precision``), as the climate-data zarr community does it:

- ``float32``: exact (the default);
- ``float16``: the nearest float16 value (10 mantissa bits, |x| <= 65504; a larger value is an error);
- ``bfloat16``: the nearest bfloat16 value (7 mantissa bits, float32's range): ``bitround-7``, and
  bit for bit what ``torch.Tensor.to(torch.bfloat16)`` keeps;
- ``bitround-N``: the mantissa rounded to N bits (1..22), round-half-to-even, numcodecs ``BitRound``'s
  arithmetic.

Every choice is stored as float32 values, so every reader (plain xarray and zarr included) gets float32
back. The rounding is done here in numpy rather than by zarr's ``numcodecs.bitround`` codec: its
decode is the identity anyway, and a store that uses only the zarr v3 spec's own codecs opens without
zarr's "not in the Zarr version 3 specification" warning and in other zarr implementations. The
rounded-away bits are zeros, which a shuffling codec then stores almost for free. The precision is
recorded in the root attrs (``storage.precision``) and on the ``activation`` variable.

Codec (``RecordConfig.codec``, ``record --codec``): ``zstd-L`` (zstd at level L) or
``blosc-CNAME-SHUFFLE[-L]`` (Blosc with lz4 or zstd after no, byte or bit shuffle, at level L), or
``auto`` (the default): chosen from the first rows written, by their fraction of exact zeros
(``choose_codec``). Measurements behind it: docs/store.md, "Precision and codecs".
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..errors import CircuitlabError

MANTISSA_BITS = 23  # float32
FLOAT16_MAX = 65504.0
_BITROUND = re.compile(r"bitround-(\d+)")
_ZSTD = re.compile(r"zstd-(\d+)")
_BLOSC = re.compile(r"blosc-(lz4|zstd)-(noshuffle|shuffle|bitshuffle)(?:-(\d))?")
BLOSC_LEVEL = {"lz4": 5, "zstd": 1}  # level when the name gives none: lz4 is as fast at 5, zstd is not
#: ``codec="auto"``: zstd once this fraction of the valid activations is exactly zero (AbsTopK, ReLU), else
#: Blosc lz4 after a bit shuffle. Measured in docs/store.md: zstd stores less from 10% zeros on in
#: float32, from about 35% in bfloat16 (rounded values leave the bit shuffle more to gain).
AUTO_ZEROS = {"float32": 0.10, "rounded": 0.35}
AUTO_DENSE, AUTO_SPARSE = "blosc-lz4-bitshuffle", "zstd-1"


def keep_bits(precision: str) -> int:
    """Mantissa bits a precision keeps (23: all of float32's)."""
    if precision == "float32":
        return MANTISSA_BITS
    if precision == "float16":
        return 10
    if precision == "bfloat16":
        return 7
    m = _BITROUND.fullmatch(precision or "")
    if not m or not 1 <= int(m.group(1)) < MANTISSA_BITS:
        raise CircuitlabError(f"unknown storage precision {precision!r}; use float32, float16, bfloat16 or "
                              f"bitround-N with N in 1..{MANTISSA_BITS - 1}")
    return int(m.group(1))


def error_bound(precision: str) -> tuple[float, float]:
    """(rel, floor): every stored value r of an input x obeys |r - x| <= rel * max(|x|, floor).

    Rounding to nearest at N mantissa bits moves a value by at most half its last kept bit: 2^-(N+1)
    relative for normal numbers. Below the smallest normal number (2^-126 for float32, 2^-14 for
    float16) the spacing stops shrinking, hence the floor."""
    n = keep_bits(precision)
    if n == MANTISSA_BITS:
        return 0.0, 0.0
    return 2.0 ** -(n + 1), 2.0 ** (-14 if precision == "float16" else -126)


def round_mantissa(a: np.ndarray, keepbits: int) -> np.ndarray:
    """Round float32 ``a`` in place to ``keepbits`` mantissa bits, to nearest, ties to even.

    Adding half a kept unit minus one, plus the lowest kept bit, then clearing the dropped bits, is
    round-half-to-even on the bit pattern; a carry into the exponent is the correct rounding up
    (numcodecs.BitRound does the same)."""
    if keepbits >= MANTISSA_BITS or a.size == 0:
        return a
    drop = MANTISSA_BITS - keepbits
    bits = a.view(np.uint32)
    lowest_kept = np.right_shift(bits, drop)
    np.bitwise_and(lowest_kept, np.uint32(1), out=lowest_kept)
    lowest_kept += np.uint32((1 << (drop - 1)) - 1)
    bits += lowest_kept
    np.bitwise_and(bits, np.uint32((0xFFFFFFFF >> drop) << drop), out=bits)
    return a


def apply_precision(a: np.ndarray, precision: str) -> np.ndarray:
    """``a`` (contiguous float32, modified in place) rounded to ``precision``; float16 checks its range."""
    if precision == "float16":
        big = float(np.abs(a).max(initial=0.0))
        if not big < 65520.0:  # the float16 rounding threshold to infinity (NaN fails too)
            raise CircuitlabError(f"an activation of {big:.6g} does not fit float16 (largest 65504); record with "
                                  "--precision bfloat16 (float32's range) or bitround-10 (float16's mantissa)")
        with np.errstate(over="ignore"):
            a[...] = a.astype(np.float16)
        return a
    return round_mantissa(a, keep_bits(precision))


def precision_attrs(precision: str) -> dict[str, Any]:
    """What the ``activation`` variable's attrs say about its precision (docs/store.md)."""
    rel, floor = error_bound(precision)
    return {"precision": precision, "mantissa_bits": keep_bits(precision), "max_relative_error": rel,
            "relative_error_floor": floor}


def compressors(codec: str) -> list:
    """The zarr v3 compressor list of a codec name (``zstd-1``, ``blosc-lz4-shuffle``, ``blosc-zstd-bitshuffle-3``)."""
    from zarr.codecs import BloscCodec, ZstdCodec

    m = _ZSTD.fullmatch(codec or "")
    if m and 1 <= int(m.group(1)) <= 22:
        return [ZstdCodec(level=int(m.group(1)))]
    m = _BLOSC.fullmatch(codec or "")
    if m:
        level = int(m.group(3)) if m.group(3) else BLOSC_LEVEL[m.group(1)]
        return [BloscCodec(cname=m.group(1), shuffle=m.group(2), clevel=level)]
    raise CircuitlabError(f"unknown codec {codec!r}; use zstd-L (L = 1..22) or blosc-CNAME-SHUFFLE[-L] "
                          "(CNAME lz4 or zstd, SHUFFLE noshuffle, shuffle or bitshuffle, L = 0..9)")


def choose_codec(codec: str, activation: np.ndarray, valid: np.ndarray,
                 precision: str = "float32") -> tuple[str, float | None]:
    """The codec to use and, for ``auto``, the zero fraction it was chosen by: dense activations compress
    no better with zstd than with Blosc lz4 + bit shuffle, which is 2-3x faster; zeros are what zstd wins on.

    ``valid`` (n, T) marks real tokens: the zeros after each example's last token say nothing about the model."""
    if codec != "auto":
        return codec, None
    values = activation[valid]
    zeros = float((values == 0).mean()) if values.size else 0.0
    threshold = AUTO_ZEROS["float32" if precision == "float32" else "rounded"]
    return (AUTO_SPARSE if zeros >= threshold else AUTO_DENSE), zeros
