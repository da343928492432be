"""The benchmark's layers: every distinct conv layer of a few networks, with its count.

Pure data (no NumPy, no torch): ``benchmarks/run.py`` hands these layers to the
worker processes (``benchmarks/worker.py``) as JSON.

Networks and the sizes they run at (chosen so the whole zoo runs on 2 cores in
minutes, each layer at the shape it has inside the network):

=============  ==========================================================  ==============
name           what                                                         input
=============  ==========================================================  ==============
resnet18       ResNet-18 (7x7 stem, 4 stages of basic blocks, 1x1 skips)    N4 3x96x96
mobilenetv2    MobileNetV2 1.0 (stem, 17 inverted residuals, 1x1 head)      N4 3x96x96
vgg11          VGG-11 (configuration A), its 8 conv layers                  N4 3x64x64
unet2d         2-D U-Net, 4 levels from 16 channels, 2x2 transposed ups     N2 3x64x64
wavenet1d      WaveNet-like 1-D stack: 2 x dilations 1..512, kernel 2,      N4 1x4096
               gated 32->64, 1x1 residual/skip, causal (input padded left)
unet3d         3-D U-Net block: two levels from 16 channels, strided down,  N2 4x32x32x32
               2x2x2 transposed up, 1x1x1 head
science-f64    float64 2-D field layers: 5x5 'same' 4->16 and 3x3 16->4    N8 4x64x64
=============  ==========================================================  ==============

Identical layers inside a network (same shapes, dtype and geometry) are merged
and counted; a network's total is the count-weighted sum over its layers.
``SUITE`` is the old 7-shape suite (S1-S7, S7 in float64 too); ``TINY`` is the
1x1x8x8 3x3 call whose per-call overhead issue 13 budgets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


def _tuple(v, nd: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * nd


@dataclass(frozen=True)
class Layer:
    """One convolution call: ``conv`` (or ``conv_transpose``) of x (n, c, *size)."""

    net: str
    name: str
    n: int
    c: int  # input channels of the call
    o: int  # output channels of the call
    size: tuple[int, ...]  # spatial size of the call's input
    k: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int = 1
    transposed: bool = False
    output_padding: tuple[int, ...] = ()
    dtype: str = "float32"
    count: int = 1

    @property
    def nd(self) -> int:
        return len(self.size)

    @property
    def ident(self) -> str:
        """Unique within a run: network and layer name."""
        return f"{self.net}/{self.name}"

    @property
    def geometry(self) -> tuple:
        """Everything that decides the computation (what merges duplicates)."""
        return (self.n, self.c, self.o, self.size, self.k, self.stride, self.padding,
                self.dilation, self.groups, self.transposed, self.output_padding, self.dtype)

    @property
    def out_size(self) -> tuple[int, ...]:
        if self.transposed:
            return tuple((h - 1) * s - 2 * p + d * (k - 1) + op + 1
                         for h, k, s, p, d, op in zip(self.size, self.k, self.stride,
                                                      self.padding, self.dilation,
                                                      self.output_padding))
        return tuple((h + 2 * p - d * (k - 1) - 1) // s + 1
                     for h, k, s, p, d in zip(self.size, self.k, self.stride, self.padding,
                                              self.dilation))

    @property
    def x_shape(self) -> tuple[int, ...]:
        return (self.n, self.c, *self.size)

    @property
    def y_shape(self) -> tuple[int, ...]:
        return (self.n, self.o, *self.out_size)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.transposed:  # (C_in, C_out / g, *k), as torch
            return (self.c, self.o // self.groups, *self.k)
        return (self.o, self.c // self.groups, *self.k)

    @property
    def depthwise(self) -> bool:
        return not self.transposed and self.groups > 1 and self.groups == self.c

    @property
    def conv_input_shape(self) -> tuple[int, ...]:
        """The input of the convolution this layer is (or is the adjoint of).

        A transposed layer is the grad-input map of the convolution whose input
        has the transposed layer's output shape: that is what im2col/col2im and
        ``npconv.explain`` see for it.
        """
        return self.y_shape if self.transposed else self.x_shape

    @property
    def conv_weight_shape(self) -> tuple[int, ...]:
        return self.weight_shape  # the same array in both readings

    @property
    def unfoldable(self) -> bool:
        """im2col/col2im are compared with F.unfold/F.fold on 2-D, groups=1 layers."""
        return self.nd == 2 and self.groups == 1

    @property
    def flops(self) -> int:
        """Multiply-adds x 2 of the forward (the transposed one: of its adjoint)."""
        conv_out = self.x_shape if self.transposed else self.y_shape
        spatial = 1
        for v in conv_out[2:]:
            spatial *= v
        taps = 1
        for v in self.k:
            taps *= v
        big, small = (self.c, self.o) if self.transposed else (self.o, self.c)
        return 2 * self.n * big * (small // self.groups) * taps * spatial

    def describe(self) -> str:
        sp = "x".join(map(str, self.size))
        out = "x".join(map(str, self.out_size))

        def one(t):
            return str(t[0]) if len(set(t)) == 1 else "x".join(map(str, t))

        parts = [f"N{self.n} {self.c}@{sp} -> {self.o}@{out}", f"k{one(self.k)}"]
        if set(self.stride) != {1}:
            parts.append(f"s{one(self.stride)}")
        if set(self.padding) != {0}:
            parts.append(f"p{one(self.padding)}")
        if set(self.dilation) != {1}:
            parts.append(f"d{one(self.dilation)}")
        if self.groups > 1:
            parts.append("dw" if self.depthwise else f"g{self.groups}")
        if self.transposed:
            parts.append("transposed")
        if self.dtype != "float32":
            parts.append(self.dtype)
        return " ".join(parts)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Layer:
        d = dict(d)
        for key in ("size", "k", "stride", "padding", "dilation", "output_padding"):
            d[key] = tuple(d[key])
        return cls(**d)


def layer(net: str, name: str, n: int, c: int, o: int, size, k, s=1, p=0, d=1, g=1,
          dtype="float32", transposed=False, output_padding=0) -> Layer:
    size = _tuple(size, 1 if isinstance(size, int) else len(size))
    nd = len(size)
    return Layer(net, name, n, c, o, size, _tuple(k, nd), _tuple(s, nd), _tuple(p, nd),
                 _tuple(d, nd), g, transposed,
                 _tuple(output_padding, nd) if transposed else (), dtype)


def merge(layers: list[Layer]) -> list[Layer]:
    """Identical geometries merged into one layer with a count (first name kept)."""
    seen: dict[tuple, Layer] = {}
    for item in layers:
        key = item.geometry
        if key in seen:
            seen[key] = replace(seen[key], count=seen[key].count + item.count)
        else:
            seen[key] = item
    return list(seen.values())


# --------------------------------------------------------------------------- networks


def resnet18(n: int = 4, h: int = 96) -> list[Layer]:
    net, out = "resnet18", []
    out.append(layer(net, "conv1", n, 3, 64, (h, h), 7, 2, 3))
    h = (h + 1) // 2  # stem stride 2
    h = (h + 1) // 2  # max pool 3x3 s2 p1
    cin = 64
    for stage, (cout, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
        for block in range(2):
            s = stride if block == 0 else 1
            ho = (h - 1) // s + 1
            out.append(layer(net, f"layer{stage}.{block}.conv1", n, cin, cout, (h, h), 3, s, 1))
            out.append(layer(net, f"layer{stage}.{block}.conv2", n, cout, cout, (ho, ho), 3, 1, 1))
            if s != 1 or cin != cout:
                out.append(layer(net, f"layer{stage}.{block}.downsample", n, cin, cout, (h, h),
                                 1, s, 0))
            cin, h = cout, ho
    return merge(out)


def mobilenetv2(n: int = 4, h: int = 96) -> list[Layer]:
    net, out = "mobilenetv2", []
    out.append(layer(net, "features.0", n, 3, 32, (h, h), 3, 2, 1))
    h = (h - 1) // 2 + 1
    cin, index = 32, 1
    for t, c, repeats, stride in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                  (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(repeats):
            s = stride if i == 0 else 1
            hidden = cin * t
            if t != 1:
                out.append(layer(net, f"features.{index}.expand", n, cin, hidden, (h, h), 1))
            out.append(layer(net, f"features.{index}.dw", n, hidden, hidden, (h, h), 3, s, 1,
                             g=hidden))
            h = (h - 1) // s + 1
            out.append(layer(net, f"features.{index}.project", n, hidden, c, (h, h), 1))
            cin, index = c, index + 1
    out.append(layer(net, "features.18", n, cin, 1280, (h, h), 1))
    return merge(out)


def vgg11(n: int = 4, h: int = 64) -> list[Layer]:
    net, out, cin, index = "vgg11", [], 3, 0
    for v in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]:
        if v == "M":
            h //= 2
        else:
            out.append(layer(net, f"features.{index}", n, cin, v, (h, h), 3, 1, 1))
            cin, index = v, index + 1
    return merge(out)


def unet2d(n: int = 2, h: int = 64, base: int = 16, c_in: int = 3, classes: int = 2
           ) -> list[Layer]:
    net, out = "unet2d", []
    widths = [base, base * 2, base * 4, base * 8]
    cin, size = c_in, h
    for level, w in enumerate(widths):  # encoder and bottleneck: two 3x3 convs per level
        out.append(layer(net, f"down{level}.conv1", n, cin, w, (size, size), 3, 1, 1))
        out.append(layer(net, f"down{level}.conv2", n, w, w, (size, size), 3, 1, 1))
        cin = w
        if level < len(widths) - 1:
            size //= 2  # max pool
    for level in range(len(widths) - 2, -1, -1):  # decoder
        w = widths[level]
        out.append(layer(net, f"up{level}.upconv", n, cin, w, (size, size), 2, 2, 0,
                         transposed=True))
        size *= 2
        out.append(layer(net, f"up{level}.conv1", n, 2 * w, w, (size, size), 3, 1, 1))
        out.append(layer(net, f"up{level}.conv2", n, w, w, (size, size), 3, 1, 1))
        cin = w
    out.append(layer(net, "head", n, cin, classes, (size, size), 1))
    return merge(out)


def wavenet1d(n: int = 4, length: int = 4096, residual: int = 32, stacks: int = 2,
              depth: int = 10, classes: int = 256) -> list[Layer]:
    net, out = "wavenet1d", []
    # causal convolutions: the input is padded on the left by d(k-1), no padding in the call
    out.append(layer(net, "causal", n, 1, residual, length + 1, 2))
    for stack in range(stacks):
        for i in range(depth):
            d = 2 ** i
            out.append(layer(net, f"stack{stack}.dilated{d}", n, residual, 2 * residual,
                             length + d, 2, d=d))
            out.append(layer(net, f"stack{stack}.residual{d}", n, residual, residual, length, 1))
            out.append(layer(net, f"stack{stack}.skip{d}", n, residual, residual, length, 1))
    out.append(layer(net, "post1", n, residual, residual, length, 1))
    out.append(layer(net, "post2", n, residual, classes, length, 1))
    return merge(out)


def unet3d(n: int = 2, h: int = 32, base: int = 16, c_in: int = 4, classes: int = 2
           ) -> list[Layer]:
    net, out = "unet3d", []
    s3 = (h, h, h)
    out.append(layer(net, "enc.conv1", n, c_in, base, s3, 3, 1, 1))
    out.append(layer(net, "enc.conv2", n, base, base, s3, 3, 1, 1))
    out.append(layer(net, "down", n, base, 2 * base, s3, 3, 2, 1))
    h2 = (h - 1) // 2 + 1
    s2 = (h2, h2, h2)
    out.append(layer(net, "mid.conv", n, 2 * base, 2 * base, s2, 3, 1, 1))
    out.append(layer(net, "upconv", n, 2 * base, base, s2, 2, 2, 0, transposed=True))
    out.append(layer(net, "dec.conv1", n, 2 * base, base, s3, 3, 1, 1))
    out.append(layer(net, "dec.conv2", n, base, base, s3, 3, 1, 1))
    out.append(layer(net, "head", n, base, classes, s3, 1))
    return merge(out)


def science_f64(n: int = 8, h: int = 64) -> list[Layer]:
    net = "science-f64"
    return merge([
        layer(net, "field5x5", n, 4, 16, (h, h), 5, 1, 2, dtype="float64"),
        layer(net, "stencil3x3", n, 16, 4, (h, h), 3, 1, 1, dtype="float64"),
    ])


NETWORKS = {
    "resnet18": resnet18,
    "mobilenetv2": mobilenetv2,
    "vgg11": vgg11,
    "unet2d": unet2d,
    "wavenet1d": wavenet1d,
    "unet3d": unet3d,
    "science-f64": science_f64,
}

NETWORK_INPUTS = {
    "resnet18": "N4 3x96x96",
    "mobilenetv2": "N4 3x96x96",
    "vgg11": "N4 3x64x64",
    "unet2d": "N2 3x64x64",
    "wavenet1d": "N4 1x4096 (2 x 10 dilations)",
    "unet3d": "N2 4x32x32x32",
    "science-f64": "N8 4x64x64, float64",
}

# networks whose lead over torch must not shrink (issue 13: 3-D 0.8x, float64 0.3x)
GUARDED = {"unet3d": 0.8, "science-f64": 0.3}


def zoo(names=None) -> dict[str, list[Layer]]:
    names = list(NETWORKS) if names is None else names
    unknown = [name for name in names if name not in NETWORKS]
    if unknown:
        raise SystemExit(f"unknown network(s) {unknown}; known: {', '.join(NETWORKS)}")
    return {name: NETWORKS[name]() for name in names}


# --------------------------------------------------------------------------- old suite


def _suite() -> list[Layer]:
    def case(name, n, c, h, o, k, s=1, p=0, g=1, dtype="float32"):
        return layer("suite", name, n, c, o, (h, h), k, s, p, g=g, dtype=dtype)

    return [
        case("S1", 16, 64, 56, 64, 3, 1, 1),
        case("S2", 16, 128, 28, 256, 3, 2, 1),
        case("S3", 8, 3, 224, 64, 7, 2, 3),
        case("S4", 16, 256, 28, 64, 1),
        case("S5", 1, 32, 64, 32, 3, 1, 1),
        case("S6", 16, 128, 28, 128, 3, 1, 1, g=128),
        case("S7", 128, 3, 32, 16, 3),
        case("S7-f64", 128, 3, 32, 16, 3, dtype="float64"),
    ]


SUITE = _suite()
TINY = layer("tiny", "tiny", 1, 1, 1, (8, 8), 3)
TINY_BUDGET_US = {"forward": 20.0, "backward": 50.0, "im2col": 12.0}
