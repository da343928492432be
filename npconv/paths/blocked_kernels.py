"""Compiled kernels of the ``blocked`` path (numba and llvmlite; imported only when it runs).

A *slab* holds, per input channel, a tile's planes of an image's zero-padded
frame (strided layers: of each phase grid the taps read), flattened, with
zeros after them; kernel tap t is the shift ``off[t]`` in it. With vectors of
``L`` positions (64 bytes: 16 float32 or 8 float64):

    forward      out[o, p:p+L]  = sum_t sum_c w[o, c, t] x[c, p+off[t] : p+off[t]+L]
    grad weight  gw[t, c, o]   += sum_p x[c, p + off[t]] gyt[p, o]

``_forward_sums`` keeps J output channels times V vectors of positions in
registers over the whole (t, c) loop: per step V vector loads, J broadcasts of
weights and J V fused multiply-adds; ``_rows_lowering`` stores them into a tile
or straight into the output's rows (masked at a row's end). ``_weight_lowering``
keeps R input channels times V vectors of output channels (grad_output stored
channels last, ``gyt``, by ``_lower_transpose``, an L x L block at a time) over
a run of positions: per position V vector loads, R broadcasts of input pixels,
R V fused multiply-adds, and no sums across lanes. This is the register
blocking of a BLAS microkernel, written in LLVM IR: numba's loops keep such sums
in memory (it cannot tell the arrays apart, so LLVM does not hold them in
registers: 6-8 GFLOP/s a thread for the loop version against 130-180 for these,
measured on 16- to 64-channel 3x3 and 3x3x3 layers).
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
# grad weight's positions per pass over its blocks: a run of grad_output and of a tap's
# input stays in cache while every block reads it. It matters little (one thread,
# GFLOP/s on 64 -> 64 24x24, 16 -> 16 32^3 and 32 -> 32 32x32 tiles: 256: 169, 156, 169;
# 128: 181, 145, 168; whole tiles: 181, 142, 168; 64: 108, 133, 160).
CHUNK = 256
I64 = ir.IntType(64)


def lanes_of(itemsize: int) -> int:
    return LANE_BYTES // itemsize


def _vector(context: Any, dtype: Any) -> Any:
    element = context.get_value_type(dtype)
    return ir.VectorType(element, LANE_BYTES // (4 if isinstance(element, ir.FloatType) else 8))


def _suffix(vty: Any) -> str:
    """The LLVM intrinsics' element type suffix of vector type ``vty``."""
    return "f32" if isinstance(vty.element, ir.FloatType) else "f64"


def _fma(builder: Any, vty: Any) -> Any:
    suffix = _suffix(vty)
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


def _forward_sums(builder: Any, vty: Any, arrays: list[Any], p: Any, ob: Any,
                  vectors: int) -> list[Any]:
    """The J x V sums of a forward block (allocas, j-major): bias[ob J + j] +
    sum_t sum_c w[ob, t, c, j] x[c, p + off[t] + v L : +L], arrays = (x, w, off, bias)."""
    x, w, off, bias = arrays
    fma, lanes = _fma(builder, vty), vty.count
    x_len = builder.extract_value(x.shape, 1)
    taps, channels = builder.extract_value(w.shape, 1), builder.extract_value(w.shape, 2)
    w_block = builder.gep(w.data, [builder.mul(ob, builder.mul(taps, builder.mul(
        channels, _const(OUT_BLOCK))))])
    sums = []
    for j in range(OUT_BLOCK):
        row = builder.add(builder.mul(ob, _const(OUT_BLOCK)), _const(j))
        start = _splat(builder, vty, builder.load(builder.gep(bias.data, [row])))
        sums += [cgutils.alloca_once_value(builder, start) for _ in range(vectors)]
    with cgutils.for_range(builder, taps) as tap:
        x_tap = builder.gep(x.data, [builder.add(p, builder.load(builder.gep(off.data,
                                                                             [tap.index])))])
        w_tap = builder.gep(w_block, [builder.mul(tap.index, builder.mul(channels,
                                                                         _const(OUT_BLOCK)))])
        with cgutils.for_range(builder, channels) as ch:
            x_row = builder.gep(x_tap, [builder.mul(ch.index, x_len)])
            xs = [_load(builder, vty, x_row, _const(v * lanes)) for v in range(vectors)]
            w_row = builder.gep(w_tap, [builder.mul(ch.index, _const(OUT_BLOCK))])
            for j in range(OUT_BLOCK):
                wj = _splat(builder, vty, builder.load(builder.gep(w_row, [_const(j)])))
                for v in range(vectors):
                    s = sums[j * vectors + v]
                    builder.store(builder.call(fma, [wj, xs[v], builder.load(s)]), s)
    return sums


def _weight_lowering(rows: int, vectors: int) -> Any:
    """The lowering of a grad-weight block: ``rows`` input channels (broadcast from the
    slab) times ``vectors`` vectors of output channels (loaded from grad_output's rows)."""

    def lower(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        """gw[t, c0 + j, o0 + v L : +L] += sum over p in [start, stop) of
        x[c0 + j, p + shift] gyt[p, o0 + v L : +L]."""
        gw, gyt, x = _arrays(context, builder, sig, args, 3)
        t, shift, c0, o0, start, stop = args[3:9]
        vty = _vector(context, sig.args[0].dtype)
        fma, lanes = _fma(builder, vty), vty.count
        width = builder.extract_value(gyt.shape, 1)  # O'
        x_len = builder.extract_value(x.shape, 1)
        x_rows = [builder.gep(x.data, [builder.add(builder.mul(builder.add(c0, _const(j)),
                                                               x_len), shift)])
                  for j in range(rows)]
        sums = _sums(builder, vty, rows * vectors)
        with cgutils.for_range_slice(builder, start, stop, _const(1)) as (p, _):
            at = builder.add(builder.mul(p, width), o0)
            gs = [_load(builder, vty, gyt.data, builder.add(at, _const(v * lanes)))
                  for v in range(vectors)]
            for j in range(rows):
                xj = _splat(builder, vty, builder.load(builder.gep(x_rows[j], [p])))
                for v in range(vectors):
                    acc = sums[j * vectors + v]
                    builder.store(builder.call(fma, [xj, gs[v], builder.load(acc)]), acc)
        channels = builder.extract_value(gw.shape, 1)
        for j in range(rows):
            row = builder.mul(builder.add(builder.mul(t, channels), builder.add(c0, _const(j))),
                              width)
            for v in range(vectors):
                ptr = builder.bitcast(builder.gep(gw.data, [builder.add(
                    row, builder.add(o0, _const(v * lanes)))]), vty.as_pointer())
                total = builder.fadd(builder.load(ptr, align=_align(vty)),
                                     builder.load(sums[j * vectors + v]))
                builder.store(total, ptr, align=_align(vty))
        return context.get_dummy_value()

    return lower


def _weight_intrinsic(rows: int, vectors: int) -> Any:
    lower = _weight_lowering(rows, vectors)

    def typer(typingctx: Any, gw: Any, gyt: Any, x: Any, t: Any, shift: Any, c0: Any, o0: Any,
              start: Any, stop: Any) -> Any:
        return types.void(gw, gyt, x, t, shift, c0, o0, start, stop), lower

    return intrinsic(typer)


def _masked_store(builder: Any, vty: Any, value: Any, ptr: Any, valid: Any) -> None:
    """Store the first ``valid`` lanes of ``value`` at ``ptr`` (no other memory written)."""
    i32 = ir.IntType(32)
    lanes = ir.Constant(ir.VectorType(I64, vty.count), list(range(vty.count)))
    mask = builder.icmp_signed("<", lanes, _splat(builder, ir.VectorType(I64, vty.count),
                                                  valid))
    suffix = _suffix(vty)
    fnty = ir.FunctionType(ir.VoidType(), [vty, vty.as_pointer(), i32, mask.type])
    store = cgutils.get_or_insert_function(builder.module, fnty,
                                           f"llvm.masked.store.v{vty.count}{suffix}.p0")
    builder.call(store, [value, builder.bitcast(ptr, vty.as_pointer()),
                         ir.Constant(i32, _align(vty)), mask])


def _rows_lowering(vectors: int) -> Any:
    """The lowering of a forward block written straight into the output rows."""

    def lower(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        """y[ob J + j, q : q + count] = bias[ob J + j]
        + sum_t sum_c w[ob, t, c, j] x[c, p + off[t] : + count], count <= V L."""
        y, *arrays = _arrays(context, builder, sig, args, 5)
        p, q, ob, count = args[5:9]
        vty = _vector(context, sig.args[0].dtype)
        sums = _forward_sums(builder, vty, arrays, p, ob, vectors)
        y_len = builder.extract_value(y.shape, 1)
        for j in range(OUT_BLOCK):
            row = builder.add(builder.mul(builder.add(builder.mul(ob, _const(OUT_BLOCK)),
                                                      _const(j)), y_len), q)
            for v in range(vectors):
                at = builder.gep(y.data, [builder.add(row, _const(v * vty.count))])
                _masked_store(builder, vty, builder.load(sums[j * vectors + v]), at,
                              builder.sub(count, _const(v * vty.count)))
        return context.get_dummy_value()

    return lower


def _rows_intrinsic(vectors: int) -> Any:
    lower = _rows_lowering(vectors)

    def typer(typingctx: Any, y: Any, x: Any, w: Any, off: Any, bias: Any, p: Any, q: Any,
              ob: Any, count: Any) -> Any:
        return types.void(y, x, w, off, bias, p, q, ob, count), lower

    return intrinsic(typer)


_rows_1 = _rows_intrinsic(1)
_rows_2 = _rows_intrinsic(2)
_rows_3 = _rows_intrinsic(3)
_rows_full = (_rows_1, _rows_2, _rows_3)[VECTORS - 1]  # a whole block (all lanes stored)


@_jit
def forward_rows(y: Any, x: Any, w: Any, off: Any, bias: Any, planes: int, rows: int,
                 width: int, q0: int, q_plane: int, q_row: int, p_plane: int,
                 p_row: int) -> None:
    """forward_tile written straight into y (O, P), O a multiple of J: ``planes`` x
    ``rows`` runs of ``width`` outputs, run (i, r) at q0 + i q_plane + r q_row in y and
    at i p_plane + r p_row in the slab x; each run in blocks of up to V L positions
    (fewer vectors for a short run's last block, no junk computed)."""
    lanes = LANE_BYTES // y.itemsize
    for i in range(planes):
        for r in range(rows):
            p, q = i * p_plane + r * p_row, q0 + i * q_plane + r * q_row
            for start in range(0, width, VECTORS * lanes):
                count = min(VECTORS * lanes, width - start)
                for ob in range(w.shape[0]):
                    if count > 2 * lanes:
                        _rows_3(y, x, w, off, bias, p + start, q + start, ob, count)
                    elif count > lanes:
                        _rows_2(y, x, w, off, bias, p + start, q + start, ob, count)
                    else:
                        _rows_1(y, x, w, off, bias, p + start, q + start, ob, count)


def _lower_transpose(context: Any, builder: Any, sig: Any, args: Any) -> Any:
    """dst[d + j, c0 + i] = src[c0 + i, s + j] for i, j < L: one L x L block, by
    log2(L) rounds of two-vector shuffles (each swaps the off-diagonal k x k blocks of
    every 2k x 2k block, k = L/2, ..., 1)."""
    dst, src = _arrays(context, builder, sig, args, 2)
    d, s, c0 = args[2:5]
    width = builder.extract_value(dst.shape, 1)
    length = builder.extract_value(src.shape, 1)
    transpose_block(builder, _vector(context, sig.args[0].dtype),
                    dst.data, builder.add(builder.mul(d, width), c0), width,
                    src.data, builder.add(builder.mul(c0, length), s), length)
    return context.get_dummy_value()


def transpose_block(builder: Any, vty: Any, dst: Any, d0: Any, dst_row: Any, src: Any,
                    s0: Any, src_row: Any) -> None:
    """dst[d0 + l dst_row + r] = src[s0 + r src_row + l] for r, l < L (``vty``'s lanes),
    through element pointers ``dst`` and ``src``: L vector loads, the block's transpose
    in registers (:func:`_block_swaps`), L vector stores."""
    lanes = vty.count
    rows = [_load(builder, vty, src, builder.add(s0, builder.mul(src_row, _const(r))))
            for r in range(lanes)]
    for r, value in enumerate(_block_swaps(builder, rows, lanes)):
        at = builder.gep(dst, [builder.add(d0, builder.mul(dst_row, _const(r)))])
        builder.store(value, builder.bitcast(at, vty.as_pointer()), align=_align(vty))


def _block_swaps(builder: Any, rows: list[Any], lanes: int) -> list[Any]:
    """The transpose of an L x L block held in L vectors: for k = L/2, ..., 1, rows i
    and i + k (bit k of i clear) swap their off-diagonal k x k blocks (row i's lanes
    with bit k set for row i + k's lanes with it clear). Once every bit has been
    swapped, vector l holds column l: 4 stages of 16 two-register permutes (float32)."""
    k = lanes // 2
    while k:
        low = [j if not j & k else lanes + j - k for j in range(lanes)]
        high = [j + k if not j & k else lanes + j for j in range(lanes)]
        for i in (i for i in range(lanes) if not i & k):
            a, b = rows[i], rows[i + k]
            rows[i] = builder.shuffle_vector(a, b, _mask(low))
            rows[i + k] = builder.shuffle_vector(a, b, _mask(high))
        k //= 2
    return rows


def _mask(indices: list[int]) -> Any:
    i32 = ir.IntType(32)
    return ir.Constant(ir.VectorType(i32, len(indices)), [ir.Constant(i32, i) for i in indices])


@intrinsic
def _transpose_micro(typingctx: Any, dst: Any, src: Any, d: Any, s: Any, c0: Any) -> Any:
    return types.void(dst, src, d, s, c0), _lower_transpose


@_jit
def transpose_run(dst: Any, src: Any, d: int, s: int, count: int) -> None:
    """dst[d + p, c] = src[c, s + p] for p < count and c < src.shape[0]: dst (rows, O')
    and src (O, P) C-contiguous, O' a multiple of L and at least O."""
    lanes = LANE_BYTES // dst.itemsize
    o = src.shape[0]
    full_o, full_p = o - o % lanes, count - count % lanes
    for p0 in range(0, full_p, lanes):
        for c0 in range(0, full_o, lanes):
            _transpose_micro(dst, src, d + p0, s + p0, c0)  # type: ignore[call-arg]
    for p in range(full_p, count):
        for c in range(full_o):
            dst[d + p, c] = src[c, s + p]
    for p in range(count):
        for c in range(full_o, o):
            dst[d + p, c] = src[c, s + p]


@_jit
def transpose_tile(dst: Any, src: Any, planes: int, rows: int, width: int, s0: int,
                   s_plane: int, s_row: int, d_plane: int, d_row: int) -> None:
    """transpose_run of ``planes`` x ``rows`` runs of ``width`` positions: run (q, r)
    starts at s0 + q s_plane + r s_row in src and at q d_plane + r d_row in dst."""
    for q in range(planes):
        for r in range(rows):
            transpose_run(dst, src, q * d_plane + r * d_row, s0 + q * s_plane + r * s_row,
                          width)


# (input channels, output vectors) of grad weight's blocks: 16 x 1 for 16 output channels
# (17 loads a 16 fused multiply-adds), 8 x 2 from 32 (10 loads a 16); a quarter of the
# sums with AVX2.
NARROW = (16, 1) if _AVX512 else (4, 1)
WIDE = (8, 2) if _AVX512 else (2, 2)
_weight_narrow = _weight_intrinsic(*NARROW)
_weight_wide = _weight_intrinsic(*WIDE)


@_jit
def forward_tile(out: Any, x: Any, w: Any, off: Any, bias: Any, stop: int, step: int) -> None:
    """out[:, :stop] (B J, >= stop) = bias (B J,) plus the convolution of the slab x
    (C, >= stop + max(off)) by w (B, T, C, J), for stop a multiple of step = V L."""
    for p in range(0, stop, step):
        for ob in range(w.shape[0]):
            _rows_full(out, x, w, off, bias, p, p, ob, step)


@_jit
def grad_weight_tile(gw: Any, gyt: Any, x: Any, off: Any, stop: int) -> None:
    """gw (T, C', O') += sum_{p < stop} x (C', >= stop + max(off))[c, p + off[t]] gyt
    (>= stop, O')[p, o], in runs of CHUNK positions, for C' and O' multiples of a
    block's (NARROW for O' = L, else WIDE)."""
    taps, channels, width = gw.shape
    lanes = LANE_BYTES // gw.itemsize
    for start in range(0, stop, CHUNK):
        end = min(stop, start + CHUNK)
        for t in range(taps):
            if width == lanes:
                for c0 in range(0, channels, NARROW[0]):
                    _weight_narrow(gw, gyt, x, t, off[t], c0, 0, start, end)
            else:
                for c0 in range(0, channels, WIDE[0]):
                    for o0 in range(0, width, WIDE[1] * lanes):
                        _weight_wide(gw, gyt, x, t, off[t], c0, o0, start, end)


def _run_pointer(context: Any, builder: Any, sig: Any, args: Any, which: int) -> Any:
    """Pointer to element args[which + 1] of the C-contiguous array args[which], as i8*."""
    array = context.make_array(sig.args[which])(context, builder, args[which])
    return builder.bitcast(builder.gep(array.data, [args[which + 1]]), ir.IntType(8).as_pointer())


def _itemsize(context: Any, array_type: Any) -> int:
    return int(context.get_abi_sizeof(context.get_data_type(array_type.dtype)))


@intrinsic
def _copy_run(typingctx: Any, dst: Any, d: Any, src: Any, s: Any, count: Any) -> Any:
    """dst.flat[d : d + count] = src.flat[s : s + count] (C-contiguous, one memcpy)."""

    def lower(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        size = _itemsize(context, sig.args[0])
        nbytes = builder.mul(args[4], _const(size))
        cgutils.raw_memcpy(builder, _run_pointer(context, builder, sig, args, 0),
                           _run_pointer(context, builder, sig, args, 2), nbytes, 1)
        return context.get_dummy_value()

    return types.void(dst, d, src, s, count), lower


@intrinsic
def _zero_run(typingctx: Any, dst: Any, d: Any, count: Any) -> Any:
    """dst.flat[d : d + count] = 0 (C-contiguous, one memset)."""

    def lower(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        nbytes = builder.mul(args[2], _const(_itemsize(context, sig.args[0])))
        cgutils.memset(builder, _run_pointer(context, builder, sig, args, 0), nbytes, 0)
        return context.get_dummy_value()

    return types.void(dst, d, count), lower


@_jit
def fill_frame(slab: Any, img: Any, box: Any) -> None:
    """slab (C', >= length) <- zeros, except that channel c < C of its first F0 x F1 x F2
    positions (a frame, row major) holds img (C, I0, I1, I2)[c, start + i] at at + i
    (i < count, per axis), for box = (frame, at, start, count, length): a tile's
    stride-1 slab, in memset and memcpy runs (128 channels 16x16: 0.019 ms, against
    0.024 for NumPy's fill and copy)."""
    frame, at, start, count, length = box
    f0, f1, f2 = frame
    a0, a1, a2 = at
    s0, s1, s2 = start
    n0, n1, n2 = count
    i0, i1, i2 = img.shape[1], img.shape[2], img.shape[3]
    width = slab.shape[1]
    for ch in range(slab.shape[0]):
        base, pos = ch * width, 0
        if ch < img.shape[0]:
            for q0 in range(f0):
                for q1 in range(f1):
                    if a0 <= q0 < a0 + n0 and a1 <= q1 < a1 + n1:
                        _zero_run(slab, base + pos, a2)  # type: ignore[call-arg]
                        at_img = ((ch * i0 + s0 + q0 - a0) * i1 + s1 + q1 - a1) * i2 + s2
                        _copy_run(slab, base + pos + a2, img, at_img, n2)  # type: ignore
                        _zero_run(slab, base + pos + a2 + n2,  # type: ignore[call-arg]
                                  f2 - a2 - n2)
                    else:
                        _zero_run(slab, base + pos, f2)  # type: ignore[call-arg]
                    pos += f2
        _zero_run(slab, base + pos, length - pos)  # type: ignore[call-arg]


@_jit
def fill_phases(slab: Any, img: Any, table: Any, length: int) -> None:
    """slab (C', >= length) <- zeros, except the pixels of img (C, I0, I1, I2) that each
    phase segment holds: per row (base, f1, f2, a0, a1, a2, n0, n1, n2, s0, s1, s2, t0,
    t1, t2) of ``table``, position ((a0 + i0) f1 + a1 + i1) f2 + a2 + i2 of the segment
    at ``base`` holds img[c, s0 + i0 t0, s1 + i1 t1, s2 + i2 t2] (i < n per axis): a
    strided tile's slab, which NumPy filled in a dozen calls a tile."""
    width = slab.shape[1]
    for ch in range(slab.shape[0]):
        _zero_run(slab, ch * width, length)  # type: ignore[call-arg]
    dst, src = slab.reshape(slab.size), img.reshape(img.size)
    i0_, i1_, i2_ = img.shape[1], img.shape[2], img.shape[3]
    for ch in range(img.shape[0]):
        for r in range(table.shape[0]):
            base, f1, f2 = table[r, 0], table[r, 1], table[r, 2]
            a0, a1, a2, n0, n1, n2 = table[r, 3:9]
            s0, s1, s2, t0, t1, t2 = table[r, 9:15]
            for i0 in range(n0):
                for i1 in range(n1):
                    at = ch * width + base + ((a0 + i0) * f1 + a1 + i1) * f2 + a2
                    row = ((ch * i0_ + s0 + i0 * t0) * i1_ + s1 + i1 * t1) * i2_ + s2
                    _strided_run(dst, at, src, row, n2, t2)


@_jit
def _strided_run(dst: Any, at: int, src: Any, row: int, count: int, step: int) -> None:
    """dst[at + i] = src[row + i step] for i < count (all non-negative). Unsigned
    indices spare numba's negative-index fix-up, which kept LLVM from vectorizing: 576
    runs of 48 took 2.5 us at step 1 and 8 us at step 2, against 28 and 20."""
    d, s, k = numba.uint64(at), numba.uint64(row), numba.uint64(step)
    for i in range(numba.uint64(count)):
        dst[d + i] = src[s + i * k]


@_jit
def forward_rows_item(y: Any, slab: Any, img: Any, box: Any, w: Any, off: Any, bias: Any,
                      runs: Any) -> None:
    """One tile of the forward, written straight into y's rows: fill_frame, then
    forward_rows (``runs``: its last eight arguments), in one call without the GIL."""
    fill_frame(slab, img, box)
    forward_rows(y, slab, w, off, bias, runs[0], runs[1], runs[2], runs[3], runs[4], runs[5],
                 runs[6], runs[7])


@_jit
def forward_tile_item(y: Any, tile: Any, slab: Any, img: Any, box: Any, w: Any, off: Any,
                      bias: Any, stop: int, step: int, runs: Any) -> None:
    """One tile of the forward through ``tile``: fill_frame, forward_tile, then the
    tile's valid positions into y (O, P), C-contiguous, as forward_rows lays out ``runs``
    (each run one memcpy a channel)."""
    fill_frame(slab, img, box)
    forward_tile(tile, slab, w, off, bias, stop, step)
    planes, rows, width, q0, q_plane, q_row, p_plane, p_row = runs
    for c in range(y.shape[0]):
        for i in range(planes):
            for r in range(rows):
                _copy_run(y, c * y.shape[1] + q0 + i * q_plane + r * q_row,  # type: ignore
                          tile, c * tile.shape[1] + i * p_plane + r * p_row, width)


@_jit
def weight_item(gw: Any, tile: Any, slab: Any, img: Any, box: Any, gy: Any, off: Any,
                stop: int, runs: Any) -> None:
    """One tile of grad weight: fill_frame, grad_output channels last in ``tile`` (zero
    at junk positions; transpose_tile, ``runs``: its last eight arguments), then
    grad_weight_tile, in one call without the GIL."""
    fill_frame(slab, img, box)
    _zero_run(tile, 0, stop * tile.shape[1])  # type: ignore[call-arg]
    transpose_tile(tile, gy, runs[0], runs[1], runs[2], runs[3], runs[4], runs[5], runs[6],
                   runs[7])
    grad_weight_tile(gw, tile, slab, off, stop)


@_jit
def block_weight(dst: Any, src: Any, count: int) -> None:
    """dst (B, T, C, J) <- src (O, C, T)[b J + j, c, t], zero for b J + j >= count.

    src may have any strides: grad input's flipped kernel is packed from a view
    (128 x 64 3x3: 0.10 ms, against 0.23 for NumPy's flipped copy and the pack).
    256 x 256 3x3: 0.42-0.44 ms, against 0.59 for NumPy's strided copy; a plain copy
    of the same bytes took 0.19."""
    blocks, taps, channels, block = dst.shape
    for b in range(blocks):
        out = dst[b]
        rows = src[b * block:min(count, (b + 1) * block)]
        for c in range(channels):
            for t in range(taps):
                dst_ct = out[t, c]
                for j in range(rows.shape[0]):
                    dst_ct[j] = rows[j, c, t]
                for j in range(rows.shape[0], block):
                    dst_ct[j] = 0
