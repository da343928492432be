"""The rules that give maps to the compiled paths (numba) ahead of the cost model.

:func:`npconv.plan.plan` asks the cost model (:mod:`npconv.costmodel`) for each map,
then hands the maps these rules claim to ``blocked`` or
``winograd_jit``, and depthwise layers to ``depthwise_jit``. The compiled paths are
not in the model's fit; each rule states what it was measured against, on the
benchmark's network zoo (``benchmarks/ab.py``: separate processes, sides
alternating).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plan import Problem

# The compiled Winograd path (paths/winograd_jit.py) takes the maps of 3x3 layers with
# this many channels each way and this many 4x4 output tiles a call, ahead of the cost
# model (not fitted on it). Against 'auto' without it, 2 threads (docs/performance.md,
# eleventh session): VGG-11 N4 128->256 and 256->256 16x16 (64 tiles) forward 0.78-0.95x,
# grad input 0.54-0.71x, grad weight 0.36-0.58x; N4 128@12x12 (36 tiles) forward 0.87x,
# both gradients (one transform of grad_output's tiles) 0.87x of im2col's grad input
# beside Winograd's grad weight (benchmarks/ab.py, 5 rounds); 16 tiles lost (N4 256->512
# 8x8 forward 1.67x).
WINOGRAD_JIT_MIN_CHANNELS = 128
WINOGRAD_JIT_MIN_TILES = 32
# ... and the gradients only from this many channels with at most this many tiles: the
# 2-d U-Net's N2 64@16x16 and 128->64 16x16 (32 tiles) backward 0.64-0.75x the compiled
# direct path's time; larger images lost (ResNet-18's N4 64@24x24, 144 tiles; VGG-11's
# 64->128 32x32, 256: 1.2-1.5x; benchmarks/ab.py, 3 rounds). From 32 channels since the
# thirteenth session: the U-Net's N2 32->64 16x16 backward 0.71x blocked's (5 rounds).
WINOGRAD_JIT_GRADIENTS = (32, 64)  # (least channels each way, most tiles)

# The compiled direct path (paths/blocked.py, with numba) for a map of a float layer of
# at most BLOCKED_MAX_TAPS taps (not 1x1) when its result has at least
# BLOCKED_MIN_CHANNELS channels and, for the gradients, its contraction at least
# BLOCKED_MIN_CONTRACTION taps x channels per output (the fifth session's figures, for
# float32: below either, a block's overhead or its channels padded to the kernels'
# blocks dominated: U-Net's 3 -> 16 forward, 27 per output, took 1.7-2.8x 'auto''s time
# (since the sixth session's changes 0.49x: the forward has no minimum, see below),
# WaveNet's 1 -> 32 backward 2.6x; the 3-D U-Net's 4 -> 16, 108 per output, took 0.53x
# forward, and its grad input, 4 channels, 0.34x with grad weight), when at
# least BLOCKED_MIN_FILL of the positions it computes are outputs (the rest: the padded
# frame's edges and whole vector blocks; a 3x3 image in its 5x5 frame is 18%, 8x8 67%,
# 16x16x16 79%), and, with more than BLOCKED_WIDE_CHANNELS channels on both sides, on
# images of at least BLOCKED_WIDE_POSITIONS positions, where BLAS's long matmuls (and
# Winograd) caught up. 'auto''s time / blocked's, forward and backward, 2 threads,
# medians of 7, this machine: U-Net 16 -> 16 64x64 2.1, 1.7; 3-D 16 -> 16 32^3 2.5, 2.6;
# 32 -> 16 32^3 2.3, 2.6; 32 -> 32 16^3 2.6, 1.6; ResNet-18 64 -> 64 24x24 1.33, 1.35;
# VGG-11 64 -> 128 32x32 1.06, 1.48; 64 -> 64 16x16 0.98, 0.94; 128 -> 256 16x16 0.93,
# 0.75; 128 -> 128 12x12 0.81, 0.74. Strided layers need overlapping windows (more taps
# than the stride's phases): a 2x2 stride-2 kernel is four matmuls for BLAS, and blocked
# took 1.56x the time of U-Net's 32 -> 16 up-convolution backward; the 3-D U-Net's 3x3x3
# stride-2 16 -> 32 forward took 0.53x.
# float64 follows the same rules (sixth session; before, float32 only): blocked's time
# over 'auto''s, forward / grad input / grad weight, medians of 11-15: the float64
# science layers 5x5 4 -> 16 64x64 0.41 / 0.48 / 0.58 and 16 -> 4 3x3 0.64 / 0.61 /
# 0.61; U-Net 16 -> 16 64x64 0.47 / 0.52 / 0.55; 3-D 16 -> 16 16^3 0.33 / 0.32 / 0.38;
# 64 -> 64 24x24 0.60 / 0.58 / 0.72; 1-d 32 -> 64 k2 0.69 / 0.58 / 0.84; but a small
# stride-2 16 -> 32 32x32 1.01 / 1.79 / 1.08, and 64 -> 64 16x16's grad weight 1.09.
# Up to 121 taps since the sixth session (before, 27): blocked's time over 'auto''s
# choice (FFT, im2col or flipped), 2 threads, medians of 7-11, forward / grad input /
# grad weight: 7x7 16 -> 16 64x64 0.36-0.42 / 0.39 / 0.51; 11x11 16 -> 16 0.49 / 0.37
# / 0.78; 7x7 8 -> 8 128x128 0.20 / 0.17 / 0.72; 1-d k31 32 -> 32 0.33 / 0.48 / 0.48;
# ResNet-18's 7x7 stride-2 3 -> 64 stem forward 0.72 (its gradients lost, 1.18-1.34,
# and have too few channels for the rules); 9x9 3 -> 32 forward 0.53. At 13x13 (169
# taps) 16 -> 16 64x64, batch 4, blocked and FFT took the same time forward (15.7 and
# 15.9 ms), so larger kernels stay with the model.
BLOCKED_MAX_TAPS = 121
BLOCKED_MIN_CONTRACTION = 64
BLOCKED_MIN_CHANNELS = 4
# The forward needs no minimum contraction since its sums start at the bias and long
# output rows are stored straight (sixth session): blocked / 'auto' time, forward, interleaved
# medians of 15: U-Net's 3 -> 16 64x64 0.49, 2 -> 16 0.52, 1 -> 16 0.79; MobileNetV2's
# 3 -> 32 96x96 stride 2 0.78; VGG-11's 3 -> 64 64x64 0.78; WaveNet's 1 -> 32 k2 0.58;
# the 3-D 2 -> 8 0.45. Their grad input and grad weight still lost (1.3-4.1x).
# A strided grad input (one stride-1 forward per input phase, each with its own fixed
# costs) needs this many multiply-adds: blocked / im2col time, float32 and float64, 2
# threads, medians of 9: 2-9 million (2-d 16 -> 32 at 32x32 and 64x64, 3-d 8 -> 16
# 16^3) 1.09-1.81; 25-113 million (1-d 32 -> 32 4096, 2-d 32 -> 64 64x64, the 3-D
# U-Net's down layer) 0.57-0.77.
BLOCKED_STRIDED_MIN_MACS = 20_000_000
BLOCKED_MIN_FILL = 0.7
BLOCKED_WIDE_CHANNELS = 32
BLOCKED_WIDE_POSITIONS = 512
# ... or of at least BLOCKED_MID_POSITIONS where the smaller side has at most
# BLOCKED_MID_CHANNELS: after the direct row stores (sixth session), blocked's time over
# 'auto''s, forward and backward, interleaved medians of 15: U-Net 64 -> 64 16x16 0.76,
# 0.75; 128 -> 64 16x16 0.73, 0.89; but 128 -> 256 16x16 1.36, 0.90; 256 -> 256 16x16
# 1.48, 1.04; 128 -> 128 12x12 1.23, 1.41; 64 -> 128 8x8 1.06, 1.15.
BLOCKED_MID_CHANNELS = 64
BLOCKED_MID_POSITIONS = 256
# In that band (more than BLOCKED_WIDE_CHANNELS and at most BLOCKED_MID_CHANNELS
# channels, images of BLOCKED_MID_POSITIONS up to BLOCKED_WIDE_POSITIONS) the forward had
# gone to the stacked path (thirteenth session, AMD EPYC: the 2-D U-Net's N2 64@16x16
# 0.87x blocked's time) and then, for 3x3 from 64 channels, to winograd_jit in ranges of
# output channels (nineteenth session, EPYC: steady in its slow minutes, where stacked
# took 2x). On the Intel Xeon (twentieth session) blocked beat both there, ms, forward
# with bias, medians of 30, 3 alternating passes: N2 64@16x16 -> 64 3x3 blocked
# 0.24-0.30, winograd_jit 0.36-0.41, stacked 0.40-0.43; 5x5 0.51-0.55 against stacked's
# 0.66-0.77; N2 128@16x16 -> 64 0.37-0.50 against winograd_jit's 0.49-0.70; the 2-D
# U-Net in benchmarks/ab.py, 5 rounds, 0.97 (0.93-1.04). So the band stays blocked's:
# it loses at most about 13% to the others on the EPYC, and wins 25-40% on the Xeon.

BLOCKED_WHY = ("compiled direct convolution (numba): registers hold a block of outputs "
               "over the whole sum, no columns")
WINOGRAD_JIT_WHY = ("3x3 stride 1, wide channels, enough 4x4 tiles: compiled Winograd "
                    "F(4x4, 3x3), 4x fewer multiply-adds")


def overrides(problem: Problem, maps: tuple[str, ...],
              blocked: tuple[str, ...]) -> list[tuple[tuple[str, ...], str, str]]:
    """(maps, path, why) in the order :func:`npconv.plan.plan` applies them, after the
    cost model: ``blocked``'s maps (from :func:`blocked_maps`), then the compiled
    Winograd path's maps (the last word)."""
    return [(blocked, "blocked", BLOCKED_WHY),
            (winograd_jit_maps(problem, maps), "winograd_jit", WINOGRAD_JIT_WHY)]


def blocked_maps(problem: Problem, maps: tuple[str, ...]) -> tuple[str, ...]:
    """The maps that 'auto' gives the compiled direct path (see BLOCKED_MAX_TAPS)."""
    from .paths import get_path

    path = get_path("blocked")
    supported = [m for m in maps if path.requires(problem, m) is None]
    g = problem.geometry
    if (not supported or problem.pointwise
            or g.kernel_volume > BLOCKED_MAX_TAPS or g.kernel_volume <= math.prod(g.stride)
            or too_wide(problem)):
        return ()
    if path.fill(problem) < BLOCKED_MIN_FILL:
        return ()
    c, o, taps = problem.cg, problem.og, g.kernel_volume
    least, contraction = BLOCKED_MIN_CHANNELS, BLOCKED_MIN_CONTRACTION
    wanted = {"forward": o >= least,
              "grad_input": c >= least and taps * o >= contraction
              and (problem.stride_one or problem.multiply_adds >= BLOCKED_STRIDED_MIN_MACS),
              "grad_weight": min(c, o) >= least}
    return tuple(m for m in supported if wanted[m])


def too_wide(problem: Problem) -> bool:
    """Whether a layer is too wide for its images' size to give blocked (see
    BLOCKED_WIDE_CHANNELS and BLOCKED_MID_CHANNELS)."""
    narrow, positions = min(problem.cg, problem.og), problem.geometry.out_volume
    if narrow <= BLOCKED_WIDE_CHANNELS or positions >= BLOCKED_WIDE_POSITIONS:
        return False
    return narrow > BLOCKED_MID_CHANNELS or positions < BLOCKED_MID_POSITIONS


def winograd_jit_maps(problem: Problem, maps: tuple[str, ...]) -> tuple[str, ...]:
    """The maps that 'auto' gives the compiled Winograd path (see WINOGRAD_JIT_MIN_TILES
    and WINOGRAD_JIT_GRADIENTS)."""
    g, narrow = problem.geometry, min(problem.cg, problem.og)
    if g.kernel != (3, 3) or narrow < WINOGRAD_JIT_GRADIENTS[0]:
        return ()
    from .paths import get_path

    path = get_path("winograd_jit")
    tiles = problem.batch * math.prod(path.tiles(g.out_size))
    wide = narrow >= WINOGRAD_JIT_MIN_CHANNELS
    if (tiles < WINOGRAD_JIT_MIN_TILES or not path.fits(problem)
            or not (wide or tiles <= WINOGRAD_JIT_GRADIENTS[1])):
        return ()
    return tuple(m for m in maps
                 if (wide or m != "forward") and path.requires(problem, m) is None)


def compiled_depthwise(problem: Problem, maps: tuple[str, ...]) -> bool:
    """Whether the compiled depthwise path computes every map here. Ahead of the cost
    model (not fitted on it): on MobileNetV2's depthwise layers 1.3-2.5x torch's time,
    against 3-5x for the model's choice, the NumPy depthwise path (docs/performance.md,
    2026-12-03)."""
    from .paths import get_path
    path = get_path("depthwise_jit")
    return all(path.requires(problem, m) is None for m in maps)
