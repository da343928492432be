"""Compiled kernels of the ``blocked`` path (numba and llvmlite; imported only when it runs).

Planes are rows of a *slab*: each channel of a few consecutive leading-axis
planes of an image's zero-padded frame, flattened, with zeros after it. A
stride-1 convolution reads slab position ``p + off[t]`` for tile position
``p`` and kernel tap t (``off[t]``: the tap's flat shift in the frame). With
vectors of ``L`` positions (64 bytes: 16 float32 or 8 float64):

    forward      out[o, p:p+L]  = sum_t sum_c w[o, c, t] x[c, p+off[t] : p+off[t]+L]
    grad weight  gw[o, c, t]   += sum_p gy[o, p] x[c, p + off[t]]

``_lower_forward`` keeps J output channels times V vectors of positions in
registers over the whole (t, c) loop: per step V vector loads, J broadcasts of
weights and J V fused multiply-adds. ``_lower_weight`` keeps J output times K
input channels of vector sums over a run of positions, then adds each sum's
lanes into gw. This is the register blocking of a BLAS microkernel, written in
LLVM IR: numba's loops keep such sums in memory (it cannot tell the arrays
apart, so LLVM does not hold them in registers: 6-8 GFLOP/s a thread for the
loop version against 80-145 for these, measured on 16-channel 3x3x3 layers).
"""

from __future__ import annotations

from typing import Any

import llvmlite.binding as llvm_binding
import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_jit = numba.njit(nogil=True, cache=True, error_model="numpy")

LANE_BYTES = 64
# 32 vector registers with AVX-512: 24 sums and the loaded operands; AVX2 has 16 (a
# 64-byte vector takes two), so its blocks are smaller.
_AVX512 = bool(llvm_binding.get_host_cpu_features().get("avx512f", False))
OUT_BLOCK = 8 if _AVX512 else 4  # J: output channels of a forward block
VECTORS = 3 if _AVX512 else 1  # V: position vectors of a forward block
WEIGHT_OUT = 4 if _AVX512 else 2  # J and K of grad weight: J x K vector sums
WEIGHT_IN = 4 if _AVX512 else 2
# grad weight's positions per pass over its blocks (a multiple of every L): a run of
# grad_output (every channel) and a tap's input run stay in L1 while every block reads
# them. 3-D 16 -> 16 tile, one thread: 256: 101-103 GFLOP/s; 128: 88-90; 512: 89-92;
# 1024: 84; whole tiles (4656) per block: 65-69 (from L2). 4 x 4 sums beat 8 x 2 (90-91);
# 6 x 4 and 3 x 8 spilled registers (11).
CHUNK = 256
I64 = ir.IntType(64)


def lanes_of(itemsize: int) -> int:
    return LANE_BYTES // itemsize


def _vector(context: Any, dtype: Any) -> Any:
    element = context.get_value_type(dtype)
    return ir.VectorType(element, LANE_BYTES // (4 if isinstance(element, ir.FloatType) else 8))


def _fma(builder: Any, vty: Any) -> Any:
    suffix = "f32" if isinstance(vty.element, ir.FloatType) else "f64"
    fnty = ir.FunctionType(vty, [vty, vty, vty])
    return cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fma.v{vty.count}{suffix}")


def _splat(builder: Any, vty: Any, value: Any) -> Any:
    undef = ir.Constant(vty, ir.Undefined)
    one = builder.insert_element(undef, value, ir.Constant(I64, 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(ir.IntType(32),
                                                                          vty.count), None))


def _align(vty: Any) -> int:
    return 4 if isinstance(vty.element, ir.FloatType) else 8


def _load(builder: Any, vty: Any, base: Any, index: Any) -> Any:
    return builder.load(builder.bitcast(builder.gep(base, [index]), vty.as_pointer()),
                        align=_align(vty))


def _sums(builder: Any, vty: Any, count: int) -> list[Any]:
    return [cgutils.alloca_once_value(builder, ir.Constant(vty, None)) for _ in range(count)]


def _const(value: int) -> Any:
    return ir.Constant(I64, value)


def _arrays(context: Any, builder: Any, sig: Any, args: Any, count: int) -> list[Any]:
    return [context.make_array(t)(context, builder, a) for t, a in zip(sig.args[:count], args)]


def _lower_forward(context: Any, builder: Any, sig: Any, args: Any) -> Any:
    """out[ob J + j, p + v L : +L] = sum_t sum_c w[ob, t, c, j] x[c, p + off[t] + v L : +L]."""
    out, x, w, off = _arrays(context, builder, sig, args, 4)
    p, ob = args[4:6]
    vty = _vector(context, sig.args[0].dtype)
    fma, lanes = _fma(builder, vty), vty.count
    out_len = builder.extract_value(out.shape, 1)
    x_len = builder.extract_value(x.shape, 1)
    taps, channels = builder.extract_value(w.shape, 1), builder.extract_value(w.shape, 2)
    w_block = builder.gep(w.data, [builder.mul(ob, builder.mul(taps, builder.mul(
        channels, _const(OUT_BLOCK))))])
    sums = _sums(builder, vty, OUT_BLOCK * VECTORS)
    with cgutils.for_range(builder, taps) as tap:
        x_tap = builder.gep(x.data, [builder.add(p, builder.load(builder.gep(off.data,
                                                                             [tap.index])))])
        w_tap = builder.gep(w_block, [builder.mul(tap.index, builder.mul(channels,
                                                                         _const(OUT_BLOCK)))])
        with cgutils.for_range(builder, channels) as ch:
            x_row = builder.gep(x_tap, [builder.mul(ch.index, x_len)])
            xs = [_load(builder, vty, x_row, _const(v * lanes)) for v in range(VECTORS)]
            w_row = builder.gep(w_tap, [builder.mul(ch.index, _const(OUT_BLOCK))])
            for j in range(OUT_BLOCK):
                wj = _splat(builder, vty, builder.load(builder.gep(w_row, [_const(j)])))
                for v in range(VECTORS):
                    s = sums[j * VECTORS + v]
                    builder.store(builder.call(fma, [wj, xs[v], builder.load(s)]), s)
    for j in range(OUT_BLOCK):
        row = builder.add(builder.mul(builder.add(builder.mul(ob, _const(OUT_BLOCK)),
                                                  _const(j)), out_len), p)
        for v in range(VECTORS):
            at = builder.gep(out.data, [builder.add(row, _const(v * lanes))])
            builder.store(builder.load(sums[j * VECTORS + v]),
                          builder.bitcast(at, vty.as_pointer()), align=_align(vty))
    return context.get_dummy_value()


@intrinsic
def _forward_micro(typingctx: Any, out: Any, x: Any, w: Any, off: Any, p: Any, ob: Any) -> Any:
    return types.void(out, x, w, off, p, ob), _lower_forward


def _halves(builder: Any, a: Any, b: Any, size: int, lanes: int) -> Any:
    """Lane-pair sums of a and b in segments of ``size``: per segment s, a's and then
    b's half-segment sums (a's lanes s size + i + size/2 added to s size + i)."""
    half, low, high = size // 2, [], []
    for s in range(0, lanes, size):
        for base in (s, lanes + s):  # a's segment, then b's (b's lanes follow a's)
            low += [base + i for i in range(half)]
            high += [base + half + i for i in range(half)]
    mask = ir.VectorType(ir.IntType(32), lanes)
    return builder.fadd(builder.shuffle_vector(a, b, ir.Constant(mask, low)),
                        builder.shuffle_vector(a, b, ir.Constant(mask, high)))


def _lane_sums(builder: Any, vectors: list[Any], lanes: int) -> list[tuple[Any, int]]:
    """(sum of the lanes of vectors[i], i) for each vector: a tree of vector adds (15
    adds and 30 shuffles for 16 vectors of 16 lanes, against 240 scalar adds), then the
    lanes that could not pair (fewer vectors than lanes) one by one."""
    owners = [[i] * lanes for i in range(len(vectors))]
    size = lanes
    while size > 1 and len(vectors) > 1 and len(vectors) % 2 == 0:
        pairs = range(0, len(vectors), 2)
        vectors = [_halves(builder, vectors[i], vectors[i + 1], size, lanes) for i in pairs]
        owners = [[(owners[i] if (r // (size // 2)) % 2 == 0 else owners[i + 1])
                   [(r // size) * size] for r in range(lanes)] for i in pairs]
        size //= 2
    sums = []
    for vec, owner in zip(vectors, owners):
        for s in range(0, lanes, size):
            total = builder.extract_element(vec, _const(s))
            for r in range(s + 1, s + size):
                total = builder.fadd(total, builder.extract_element(vec, _const(r)))
            sums.append((total, owner[s]))
    return sums


def _lower_weight(context: Any, builder: Any, sig: Any, args: Any) -> Any:
    """gw[o0 + j, c0 + k, t] += sum over p < stop (vectors of L) of
    gy[o0 + j, p:p+L] x[c0 + k, p + shift : p + shift + L], lanes summed at the end."""
    gw, gy, x = _arrays(context, builder, sig, args, 3)
    t, shift, o0, c0, start, stop = args[3:9]
    vty = _vector(context, sig.args[0].dtype)
    fma, lanes, block, inner = _fma(builder, vty), vty.count, WEIGHT_OUT, WEIGHT_IN
    gy_len, x_len = builder.extract_value(gy.shape, 1), builder.extract_value(x.shape, 1)
    channels, taps = builder.extract_value(gw.shape, 1), builder.extract_value(gw.shape, 2)
    gy_rows = [builder.gep(gy.data, [builder.mul(builder.add(o0, _const(j)), gy_len)])
               for j in range(block)]
    x_rows = [builder.gep(x.data, [builder.add(builder.mul(builder.add(c0, _const(k)), x_len),
                                               shift)]) for k in range(inner)]
    sums = _sums(builder, vty, block * inner)
    with cgutils.for_range_slice(builder, start, stop, _const(lanes)) as (p, _):
        gs = [_load(builder, vty, row, p) for row in gy_rows]
        xs = [_load(builder, vty, row, p) for row in x_rows]
        for j in range(block):
            for k in range(inner):
                s = sums[j * inner + k]
                builder.store(builder.call(fma, [gs[j], xs[k], builder.load(s)]), s)
    for value, index in _lane_sums(builder, [builder.load(s) for s in sums], lanes):
        j, k = divmod(index, inner)
        row = builder.add(builder.mul(builder.add(o0, _const(j)), channels),
                          builder.add(c0, _const(k)))
        ptr = builder.gep(gw.data, [builder.add(builder.mul(row, taps), t)])
        builder.store(builder.fadd(builder.load(ptr), value), ptr)
    return context.get_dummy_value()


@intrinsic
def _weight_micro(typingctx: Any, gw: Any, gy: Any, x: Any, t: Any, shift: Any, o0: Any,
                  c0: Any, start: Any, stop: Any) -> Any:
    return types.void(gw, gy, x, t, shift, o0, c0, start, stop), _lower_weight


@_jit
def forward_tile(out: Any, x: Any, w: Any, off: Any, stop: int, step: int) -> None:
    """out[:, :stop] (B J, >= stop) = the convolution of the slab x (C, >= stop + max(off))
    by w (B, T, C, J), for stop a multiple of step = V L."""
    for p in range(0, stop, step):
        for ob in range(w.shape[0]):
            _forward_micro(out, x, w, off, p, ob)  # type: ignore[call-arg]


@_jit
def grad_weight_tile(gw: Any, gy: Any, x: Any, off: Any, stop: int) -> None:
    """gw (O', C', T) += sum_{p < stop} gy (O', >= stop)[o, p] x (C', >= stop +
    max(off))[c, p + off[t]], for O' and C' multiples of WEIGHT_OUT and WEIGHT_IN, stop of L,
    in runs of CHUNK positions."""
    for start in range(0, stop, CHUNK):
        end = min(stop, start + CHUNK)
        for t in range(gw.shape[2]):
            for c0 in range(0, gw.shape[1], WEIGHT_IN):
                for o0 in range(0, gw.shape[0], WEIGHT_OUT):
                    _weight_micro(gw, gy, x, t, off[t], o0, c0, start,  # type: ignore[call-arg]
                                  end)
