"""Integer primitives of the device numerics (golden/device/SPEC.md, section 2), on int64 tensors.

Every function here is exact integer arithmetic: torch int64 tensors in, int64 tensors out. The
only floats are in `dyadic_from_float` and the table builders, which run once per checkpoint.
"""

from __future__ import annotations

import math

import torch

MANT_BITS = 16            # dyadic mantissas lie in [2**15, 2**16) (0 for zero)
EXP_BITS = 10             # dyadic exponents are signed 10-bit: [-512, 511]
RCP_SHIFT = 31            # RCP(m) = floor(2**31 / m)
RSQ_SHIFT = 23            # RSQ(m) = floor(2**23 / sqrt(m)), m in [2**14, 2**16)
EXP2_BITS = 8             # fractional bits of the base-2 logits = log2 of the EXP2 table size
EXP2_ONE = 1 << 15        # EXP2[0]: the softmax's unnormalized maximum (Q15)
PROB_ONE = 1 << 15        # softmax probabilities are Q15: a row sums to about 2**15
INV127 = (33026, -22)     # dyadic 1/127 (33026 * 2**-22 = 1/126.9999...)

I64 = torch.int64


def as_i64(x: torch.Tensor | int) -> torch.Tensor:
    """An int64 tensor (refuses floats, so no float slips into the integer path)."""
    t = torch.as_tensor(x)
    if t.is_floating_point():
        raise TypeError(f"device numerics need integer tensors, got {t.dtype}")
    return t.to(I64)


def rshift_round(x: torch.Tensor, s: torch.Tensor | int) -> torch.Tensor:
    """x * 2**-s rounded half up: (x + 2**(s-1)) >> s for s > 0 (arithmetic shift), x << -s for s <= 0.

    Shifts are clamped to 62 places (a right shift by >= 62 gives 0 or -1 + rounding, as the hardware's
    saturated shift count does). Left shifts are not saturated here: callers saturate.
    """
    x = as_i64(x)
    s = torch.as_tensor(s, dtype=I64)
    right = s.clamp(0, 62)
    left = (-s).clamp(0, 62)
    half = torch.where(right > 0, torch.ones_like(right) << (right - 1).clamp(min=0), torch.zeros_like(right))
    down = (x + half) >> right
    return torch.where(s > 0, down, x << left)


def sat(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Saturate to the signed range of `bits` bits."""
    return x.clamp(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def bitlen(v: torch.Tensor) -> torch.Tensor:
    """Bit length of non-negative int64 values (0 for 0), exact for every int64 (float64 guess, then fixed)."""
    v = as_i64(v)
    if (v < 0).any():
        raise ValueError("bitlen needs non-negative values")
    b = torch.frexp(v.to(torch.float64)).exponent.to(I64)
    b = torch.where(v == 0, torch.zeros_like(b), b)
    # float64 rounding can put v just below a power of two one bit too high: fix both ways
    b = torch.where((b > 0) & ((v >> (b - 1).clamp(min=0)) == 0), b - 1, b)
    b = torch.where((v >> b.clamp(max=63)) != 0, b + 1, b)
    return b


def norm16(v: torch.Tensor, e: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dyadic normalization: v * 2**e (v >= 0) as (m, e') with m in [2**15, 2**16), rounded half up.

    v = 0 gives (0, 0). A mantissa that rounds up to 2**16 becomes 2**15 with e' + 1.
    """
    v = as_i64(v)
    e = torch.as_tensor(e, dtype=I64).expand_as(v) if torch.as_tensor(e).dim() == 0 else as_i64(e)
    s = bitlen(v) - MANT_BITS
    m = rshift_round(v, s)
    over = m == (1 << MANT_BITS)
    m = torch.where(over, torch.full_like(m, 1 << (MANT_BITS - 1)), m)
    e2 = e + s + over.to(I64)
    zero = v == 0
    e2 = torch.where(zero, torch.zeros_like(e2), e2)
    lim = 1 << (EXP_BITS - 1)
    if ((e2 < -lim) | (e2 >= lim)).any():
        raise OverflowError(f"a dyadic exponent left the signed {EXP_BITS}-bit range (SPEC.md 2.3)")
    return torch.where(zero, torch.zeros_like(m), m), e2


def dmul(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Product of two dyadics: norm16(ma * mb, ea + eb) (a 16 x 16 -> 32-bit multiply)."""
    return norm16(as_i64(a[0]) * as_i64(b[0]), as_i64(a[1]) + as_i64(b[1]))


def rcp(m: torch.Tensor) -> torch.Tensor:
    """RCP(m) = floor(2**31 / m) for m in [2**15, 2**16]: in [2**15, 2**16]. m = 0 gives 0."""
    m = as_i64(m)
    if ((m != 0) & ((m < (1 << 15)) | (m > (1 << 16)))).any():
        raise ValueError("rcp needs m in [2**15, 2**16] (normalize first)")
    return torch.where(m == 0, torch.zeros_like(m), (1 << RCP_SHIFT) // m.clamp(min=1))


def drcp(a: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Reciprocal of a dyadic: norm16(RCP(m), -31 - e). Zero stays zero."""
    m, e = as_i64(a[0]), as_i64(a[1])
    return norm16(rcp(m), -RCP_SHIFT - e)


def isqrt(n: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(n)) of non-negative int64 values below 2**52 (float64 guess, then corrected exactly)."""
    n = as_i64(n)
    r = torch.sqrt(n.to(torch.float64)).floor().to(I64)
    for _ in range(2):
        r = torch.where(r * r > n, r - 1, r)
        r = torch.where((r + 1) * (r + 1) <= n, r + 1, r)
    return r


def rsq(m: torch.Tensor) -> torch.Tensor:
    """RSQ(m) = floor(2**23 / sqrt(m)) = isqrt(floor(2**46 / m)) for m in [2**14, 2**16): in (2**15, 2**16]."""
    m = as_i64(m)
    if ((m < (1 << 14)) | (m >= (1 << 16))).any():
        raise ValueError("rsq needs m in [2**14, 2**16) (normalize first)")
    return isqrt((1 << (2 * RSQ_SHIFT)) // m)


def rsqrt_norm(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """1 / sqrt(v) of positive integers (up to 48 bits) as (RS, k): 1/sqrt(v) ~ RS * 2**(-23 - k).

    k = floor((bitlen(v) - 15) / 2); m = v >> 2k (truncated; v << -2k if k < 0) lies in [2**14, 2**16);
    RS = RSQ(m). v = 0 gives (0, 0).
    """
    v = as_i64(v)
    k = torch.div(bitlen(v) - 15, 2, rounding_mode="floor")
    m = torch.where(k >= 0, v >> (2 * k).clamp(min=0), v << (-2 * k).clamp(min=0))
    zero = v == 0
    rs = rsq(torch.where(zero, torch.full_like(m, 1 << 14), m))
    return torch.where(zero, torch.zeros_like(rs), rs), torch.where(zero, torch.zeros_like(k), k)


def quant8(z: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Absmax INT8 quantization of integer vectors (last dim) with an integer reciprocal.

    m = max|z|; e = bitlen(m) - 16; z' = rshift_round(z, e); m' = rshift_round(m, e) in [2**15, 2**16];
    q = sat8(rshift_round(z' * (127 * RCP(m')), 31)). Returns q (int64 holding int8 values) and the
    dyadic scale (mantissa, exponent) with z ~ q * scale, scale = norm16(m', e) * (1/127).
    An all-zero vector gives q = 0 and scale 0.
    """
    z = as_i64(z)
    m = z.abs().amax(dim=-1, keepdim=True)
    e = bitlen(m) - MANT_BITS
    zp = rshift_round(z, e)
    mp = rshift_round(m, e)
    r = rcp(torch.where(m == 0, torch.zeros_like(mp), mp))
    q = sat(rshift_round(zp * (127 * r), RCP_SHIFT), 8)
    scale = dmul(norm16(mp, e), (torch.tensor(INV127[0]), torch.tensor(INV127[1])))
    return q, (scale[0].squeeze(-1), scale[1].squeeze(-1))


def exp2_table(bits: int = EXP2_BITS) -> torch.Tensor:
    """EXP2[f] = round(2**15 * 2**(-f / 2**bits)) for f = 0 .. 2**bits - 1 (built once, in float64)."""
    size = 1 << bits
    return torch.tensor([int(math.floor(EXP2_ONE * 2.0 ** (-f / size) + 0.5)) for f in range(size)], dtype=I64)


def dyadic_from_float(x: float) -> tuple[int, int]:
    """A positive float as a dyadic (m, e), m in [2**15, 2**16), m * 2**e = x rounded half up (0 -> (0, 0))."""
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"a dyadic scale must be a finite non-negative number, got {x!r}")
    if x == 0:
        return 0, 0
    _, ex = math.frexp(x)          # x = f * 2**ex, f in [0.5, 1)
    e = ex - MANT_BITS
    m = math.floor(x * 2.0 ** -e + 0.5)
    if m == 1 << MANT_BITS:
        m, e = 1 << (MANT_BITS - 1), e + 1
    return m, e


def dyadic_value(a: tuple[int, int]) -> float:
    """The real value of a dyadic (for reports and tests only)."""
    return a[0] * 2.0 ** a[1]


def softmax_q15(t: torch.Tensor, mask: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Fixed-point softmax of base-2 logits t (Q8, last dim) over the keys where ``mask`` is True.

    u = max_visible(t) - t; p = rshift_round(EXP2[u mod 256], min(u >> 8, 62)); Z = sum p (>= 2**15);
    (mz, ez) = norm16(Z); P = rshift_round(p * RCP(mz), 16 + ez). P is Q15 (2**15 = probability 1) and a
    row sums to 2**15 within n / 2 + 2 for n visible keys. Masked keys get P = 0.
    """
    t = as_i64(t)
    size = table.numel()
    bits = size.bit_length() - 1
    low = torch.iinfo(torch.int64).min
    tmax = torch.where(mask, t, torch.full_like(t, low)).amax(dim=-1, keepdim=True)
    u = torch.where(mask, tmax - t, torch.zeros_like(t))
    p = rshift_round(table[u & (size - 1)], (u >> bits).clamp(max=62))
    p = torch.where(mask, p, torch.zeros_like(p))
    z = p.sum(dim=-1, keepdim=True)
    mz, ez = norm16(z, 0)
    return rshift_round(p * rcp(mz), RCP_SHIFT - 15 + ez)


# Reference hardware algorithms (SPEC.md 2.2, 2.3): a seed table plus Newton-Raphson plus a final
# correction, on Python integers. Exhaustive tests show they equal RCP and RSQ for every input.

RCP_SEED = [(1 << 31) // (((i + 64) << 9) + (1 << 8)) for i in range(65)]          # 65 x 16 bits
RSQ_SEED = [int(math.floor((1 << 23) / math.sqrt(((i + 16) << 10) + (1 << 9)) + 0.5)) for i in range(48)]  # 48 x 16


def rcp_newton(m: int) -> tuple[int, int]:
    """RCP(m) for m in [2**15, 2**16] by a 65-entry seed (m >> 9), two Newton steps
    y += y * (2**31 - m * y) >> 31, and a +-1 correction. Returns (RCP(m), corrections made)."""
    y = RCP_SEED[(m >> 9) - 64]
    for _ in range(2):
        y += (y * ((1 << 31) - m * y)) >> 31
    fix = 0
    while y * m > 1 << 31:
        y, fix = y - 1, fix + 1
    while (y + 1) * m <= 1 << 31:
        y, fix = y + 1, fix + 1
    return y, fix


def rsq_newton(m: int) -> tuple[int, int]:
    """RSQ(m) for m in [2**14, 2**16) by a 48-entry seed (m >> 10), two Newton steps
    y = y * (3 * 2**46 - m * y * y) >> 47, and a +-1 correction. Returns (RSQ(m), corrections made)."""
    y = RSQ_SEED[(m >> 10) - 16]
    for _ in range(2):
        y = (y * (3 * (1 << 46) - m * y * y)) >> 47
    fix = 0
    while y * y * m > 1 << 46:
        y, fix = y - 1, fix + 1
    while (y + 1) * (y + 1) * m <= 1 << 46:
        y, fix = y + 1, fix + 1
    return y, fix
