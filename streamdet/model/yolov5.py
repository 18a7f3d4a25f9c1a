"""The YOLOv5 detection network, written from the documented Ultralytics architecture.

Read top-down: :class:`YOLOv5` (the whole network, built from an architecture dict), then
the head :class:`Detect`, then the building blocks (:class:`Conv`, :class:`Bottleneck`,
:class:`C3`, :class:`SPPF`, ...), then the builder that turns the architecture dict into
layers, and finally :data:`ARCHITECTURES`, the official model definitions as data.

The module and attribute names mirror the Ultralytics ones on purpose, so that
``state_dict()`` keys are identical (``model.0.conv.weight`` ... ``model.24.anchors``) and a
checkpoint's tensors can be copied in by name. Nothing from an architecture dict is ever
evaluated: module names are looked up in an explicit table and only a few literal argument
strings (``'nc'``, ``'anchors'``, ``'None'``, ``'True'``, ``'False'``) are substituted.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any, cast

import torch
from torch import Tensor, nn

from streamdet.errors import ModelError

BN_EPS = 1e-3  # BatchNorm eps used by YOLOv5 (official initialize_weights)
BN_MOMENTUM = 0.03  # BatchNorm momentum used by YOLOv5 training
STRIDE_PROBE = 256  # side of the zero image whose forward pass measures the level strides
GRID_CACHE_MAX = 32  # decode grids kept per Detect head before the cache is cleared


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


class YOLOv5(nn.Module):
    """A YOLOv5 detector built from an Ultralytics architecture dict (the checkpoint ``yaml``).

    ``self.model`` is an ``nn.Sequential`` whose layer ``i`` is architecture row ``i``, so the
    state_dict keys equal Ultralytics'. Layers carry ``i`` (index), ``f`` (from: -1 or list of
    indices) and ``np`` (parameter count); ``self.save`` lists the layer outputs that later
    layers read. A freshly built model is initialised for training from scratch (BN eps and
    momentum, Detect biases); a checkpoint loader then overwrites the tensors.
    """

    official_name = "models.yolo.DetectionModel"

    def __init__(self, cfg: dict[str, Any], ch: int = 3, nc: int | None = None) -> None:
        super().__init__()
        self.yaml: dict[str, Any] = copy.deepcopy(dict(cfg))
        if nc is not None:
            self.yaml["nc"] = int(nc)
        if not isinstance(self.yaml.get("nc"), int) or self.yaml["nc"] < 1:
            raise ModelError(f"architecture needs a positive integer 'nc', got {self.yaml.get('nc')!r}")
        self.yaml["ch"] = int(ch)
        self.nc: int = self.yaml["nc"]
        self.names: list[str] = [f"class{i}" for i in range(self.nc)]
        self.inplace = True
        self.model, self.save = build_layers(self.yaml, int(ch))
        self.stride: Tensor = self._measure_strides(int(ch))
        self.initialize_biases()

    @property
    def detect(self) -> Detect:
        """The Detect head (the last layer); a property so it is not registered twice."""
        head = self.model[-1]
        assert isinstance(head, Detect)
        return head

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """Training: raw per-level outputs (B, na, ny, nx, 5+nc). Eval: decoded (B, N, 5+nc)."""
        raw = self._forward_levels(self._check_input(x))
        if self.training:
            return raw
        return self.detect.decode(raw)

    def forward_raw(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Decoded prediction plus the raw level outputs (the official eval output pair)."""
        raw = self._forward_levels(self._check_input(x))
        return self.detect.decode(raw), raw

    def _check_input(self, x: Tensor) -> Tensor:
        """Reject inputs the network cannot route (wrong rank, size not a multiple of the max stride)."""
        if x.dim() != 4:
            raise ModelError(f"expected a (B, C, H, W) input, got shape {tuple(x.shape)}")
        smax = int(self.stride.max())
        if x.shape[-2] % smax or x.shape[-1] % smax:
            raise ModelError(f"input height and width must be multiples of {smax}, got {tuple(x.shape[-2:])}")
        return x

    def _forward_levels(self, x: Tensor) -> list[Tensor]:
        """Run every layer; return the Detect head's raw per-level outputs."""
        return run_layers(self.model, self.save, x)

    def _measure_strides(self, ch: int) -> Tensor:
        """Level strides from the forward of a 256x256 zero image, as the official code measures them.

        The probe runs on a copy of the layers built on the meta device: only shapes are
        computed, so it costs no arithmetic and leaves the real weights and BN statistics alone.
        (The whole model can be built under ``torch.device("meta")`` too, to inspect shapes and
        parameter counts of large variants for free.)
        """
        with torch.device("meta"):
            layers, save = build_layers(self.yaml, ch)
            raw = run_layers(layers, save, torch.zeros(1, ch, STRIDE_PROBE, STRIDE_PROBE))
        stride = torch.tensor([STRIDE_PROBE / r.shape[-3] for r in raw], dtype=torch.float32, device="cpu")  # (nl,)
        detect = self.detect
        detect.stride = stride.clone()
        if not detect.anchors.is_meta:  # a model built on the meta device has shapes only
            detect.fix_anchor_order()
        with torch.no_grad():
            detect.anchors /= stride.view(-1, 1, 1).to(detect.anchors.device)  # pixels -> grid units
        return stride

    def initialize_biases(self, class_freq: Tensor | None = None) -> None:
        """Detect bias priors for training from scratch: ~8 objects per 640 image, ~0.6/nc per class.

        objectness bias += log(8 / (640/s)^2); class bias += log(0.6 / (nc - 0.99)), or
        log(freq / sum(freq)) when class frequencies are given.
        """
        detect = self.detect
        with torch.no_grad():
            for conv, s in zip(detect.m, detect.stride.tolist(), strict=True):
                assert isinstance(conv, nn.Conv2d) and conv.bias is not None  # Detect's 1x1 convs have biases
                b = conv.bias.view(detect.na, -1)  # (na, 5+nc), a view of the bias
                b[:, 4] += math.log(8 / (640 / s) ** 2)
                if class_freq is None:
                    b[:, 5 : 5 + detect.nc] += math.log(0.6 / (detect.nc - 0.99))
                else:
                    b[:, 5 : 5 + detect.nc] += torch.log(class_freq / class_freq.sum()).to(b)

    def fuse(self) -> YOLOv5:
        """Fold every BatchNorm into its convolution (inference only); returns self."""
        for module in self.modules():
            if isinstance(module, Conv):
                module.fuse()
        return self

    @property
    def is_fused(self) -> bool:
        """True once :meth:`fuse` has folded the BatchNorms away."""
        return any(isinstance(m, Conv) and isinstance(m.bn, nn.Identity) for m in self.modules())


# ---------------------------------------------------------------------------------------------
# The head
# ---------------------------------------------------------------------------------------------


class Detect(nn.Module):
    """YOLOv5 head: one 1x1 conv per level, then (in eval) sigmoid decoding to input pixels.

    ``anchors`` (nl, na, 2) is a buffer in grid units (pixels / stride); ``stride`` (nl,) is a
    plain float32 tensor attribute, not part of the state_dict (as in Ultralytics).
    """

    official_name = "models.yolo.Detect"
    anchors: Tensor  # the registered buffer (declared for type checkers: nn.Module.__getattr__ is untyped)

    def __init__(self, nc: int, anchors: Sequence[Sequence[float]], ch: Sequence[int], inplace: bool = True):
        super().__init__()
        self.nc = nc
        self.no = nc + 5  # outputs per anchor: x, y, w, h, obj, classes
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self.inplace = inplace
        self.stride = torch.ones(self.nl)  # set by YOLOv5 once measured
        self._grids: dict[tuple[int, int, torch.device, torch.dtype], Tensor] = {}

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        """Raw per-level outputs before sigmoid."""
        out = []
        for conv, x in zip(self.m, xs, strict=True):
            t = conv(x)  # (B, na*no, ny, nx)
            bs, _, ny, nx = t.shape
            out.append(t.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())  # (B, na, ny, nx, no)
        return out

    def decode(self, raw: list[Tensor]) -> Tensor:
        """Raw level outputs -> (B, N, no) = [cx, cy, w, h, obj, cls...] in input pixels.

        xy = (2*sigmoid - 0.5 + cell) * stride, wh = (2*sigmoid)^2 * anchor_px; each level is
        flattened in (anchor, y, x) order, x fastest, and the levels are concatenated.
        """
        z = []
        for i, t in enumerate(raw):  # t: (B, na, ny, nx, no)
            bs, _, ny, nx, _ = t.shape
            stride = float(self.stride[i])
            grid = self._grid(ny, nx, t.device, t.dtype)  # (1, 1, ny, nx, 2) = cell index - 0.5
            anchor_px = (self.anchors[i] * stride).to(t.dtype).view(1, self.na, 1, 1, 2)  # (1, na, 1, 1, 2)
            xy, wh, conf = t.sigmoid().split((2, 2, self.nc + 1), 4)
            xy = (xy * 2 + grid) * stride  # (B, na, ny, nx, 2) centre in pixels
            wh = (wh * 2) ** 2 * anchor_px  # (B, na, ny, nx, 2) size in pixels
            z.append(torch.cat((xy, wh, conf), 4).view(bs, self.na * ny * nx, self.no))  # (B, na*ny*nx, no)
        return torch.cat(z, 1)  # (B, N, no)

    def _grid(self, ny: int, nx: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """Cell offsets (1, 1, ny, nx, 2) holding (x - 0.5, y - 0.5), cached per shape/device/dtype."""
        key = (ny, nx, device, dtype)
        grid = self._grids.get(key)
        if grid is None:
            if len(self._grids) >= GRID_CACHE_MAX:
                self._grids.clear()
            y = torch.arange(ny, device=device, dtype=dtype)
            x = torch.arange(nx, device=device, dtype=dtype)
            yv, xv = torch.meshgrid(y, x, indexing="ij")
            grid = (torch.stack((xv, yv), 2) - 0.5).view(1, 1, ny, nx, 2)
            self._grids[key] = grid
        return grid

    def fix_anchor_order(self) -> None:
        """Make anchor areas grow with stride, as the official check_anchor_order does."""
        area = self.anchors.prod(-1).mean(-1).view(-1)  # (nl,) mean anchor area per level
        da, ds = area[-1] - area[0], self.stride[-1] - self.stride[0]
        if da and (da.sign() != ds.sign()):
            with torch.no_grad():
                self.anchors[:] = self.anchors.flip(0)


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


class Conv(nn.Module):
    """Conv2d (no bias, 'same' padding k//2) -> BatchNorm2d (eps 1e-3, momentum 0.03) -> SiLU."""

    official_name = "models.common.Conv"

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 d: int = 1, act: bool = True) -> None:
        super().__init__()
        pad = d * (k - 1) // 2 if p is None else p
        self.conv = nn.Conv2d(c1, c2, k, s, pad, dilation=d, groups=g, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU() if act is True else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))  # (B, c2, H/s, W/s)

    def fuse(self) -> None:
        """Replace conv+bn by one conv with bias; the fold is computed in float64."""
        bn = self.bn
        if not isinstance(bn, nn.BatchNorm2d):
            return
        conv = self.conv
        gamma, beta, mean, var = bn.weight, bn.bias, bn.running_mean, bn.running_var
        if gamma is None or beta is None or mean is None or var is None:
            raise ModelError("cannot fuse a BatchNorm without affine parameters and running statistics")
        with torch.no_grad():
            scale = gamma.double() / torch.sqrt(var.double() + bn.eps)  # (c2,)
            weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
            bias = beta.double() - mean.double() * scale
            if conv.bias is not None:
                bias = bias + conv.bias.double() * scale
            padding = conv.padding if isinstance(conv.padding, str) else _pair(conv.padding)
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, _pair(conv.kernel_size), _pair(conv.stride),
                              padding, dilation=_pair(conv.dilation), groups=conv.groups, bias=True,
                              device=conv.weight.device, dtype=conv.weight.dtype)
            fused.weight.copy_(weight)
            assert fused.bias is not None  # made with bias=True
            fused.bias.copy_(bias)
        fused.requires_grad_(conv.weight.requires_grad)
        self.conv, self.bn = fused, nn.Identity()


def _pair(size: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d size attribute (always two ints) as the pair that nn.Conv2d's signature names."""
    h, w = size
    return h, w


class Bottleneck(nn.Module):
    """1x1 Conv -> 3x3 Conv, plus the input when ``add`` (shortcut on and c1 == c2)."""

    official_name = "models.common.Bottleneck"

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = bool(shortcut and c1 == c2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))  # (B, c2, H, W)
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block: cv3(cat(m(cv1(x)), cv2(x))) with n Bottlenecks of width c2*e."""

    official_name = "models.common.C3"

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))  # (B, 2c_, H, W) -> (B, c2, H, W)


class SPPF(nn.Module):
    """Fast spatial pyramid pooling: three chained k x k max-pools of cv1(x), concatenated."""

    official_name = "models.common.SPPF"

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        y0 = self.cv1(x)  # (B, c_, H, W)
        y1 = self.m(y0)
        y2 = self.m(y1)
        return self.cv2(torch.cat((y0, y1, y2, self.m(y2)), 1))  # (B, 4c_, H, W) -> (B, c2, H, W)


class SPP(nn.Module):
    """Spatial pyramid pooling of older YOLOv5 releases: parallel max-pools (5, 9, 13)."""

    official_name = "models.common.SPP"

    def __init__(self, c1: int, c2: int, k: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)  # (B, c_, H, W)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))  # (B, c2, H, W)


class Focus(nn.Module):
    """Space-to-depth stem of older YOLOv5 releases: 2x2 pixel blocks to channels, then Conv."""

    official_name = "models.common.Focus"

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1,
                 act: bool = True) -> None:
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act=act)

    def forward(self, x: Tensor) -> Tensor:
        # (B, c1, H, W) -> (B, 4c1, H/2, W/2) -> (B, c2, H/2, W/2)
        x = torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1)
        return self.conv(x)


class Concat(nn.Module):
    """Concatenate the listed inputs along dimension ``d`` (channels), in the order of ``f``."""

    official_name = "models.common.Concat"

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, xs: list[Tensor]) -> Tensor:
        return torch.cat(xs, self.d)  # (B, sum(C_i), H, W)


# ---------------------------------------------------------------------------------------------
# Builder: architecture dict -> layers
# ---------------------------------------------------------------------------------------------

# The only module names an architecture dict may use. Looked up, never evaluated.
MODULES: MappingProxyType[str, type[nn.Module]] = MappingProxyType({
    "Conv": Conv,
    "Bottleneck": Bottleneck,
    "C3": C3,
    "SPPF": SPPF,
    "SPP": SPP,
    "Focus": Focus,
    "Concat": Concat,
    "nn.Upsample": nn.Upsample,
    "torch.nn.Upsample": nn.Upsample,
    "Detect": Detect,
})
_CONV_LIKE = (Conv, Bottleneck, C3, SPPF, SPP, Focus)  # first arg is output channels (width-scaled)


def run_layers(layers: nn.Sequential, save: list[int], x: Tensor) -> list[Tensor]:
    """Forward through the layers, routing inputs by each layer's ``f``; returns the last output."""
    # x: (B, ch, H, W) with H, W multiples of the largest stride
    outputs: list[Tensor | None] = []  # layer outputs kept for later layers (those listed in save)
    y: Any = x  # one tensor, or a list of them into Concat and Detect
    for layer in layers:
        f = cast("int | list[int]", layer.f)  # set by build_layers; torch types module attributes loosely
        if f != -1:  # gather inputs from earlier layers: one tensor or a list (Concat, Detect)
            y = outputs[f] if isinstance(f, int) else [y if j == -1 else outputs[j] for j in f]
        y = layer(y)
        outputs.append(y if layer.i in save else None)
    return cast("list[Tensor]", y)  # Detect output: list of nl tensors (B, na, ny, nx, no)


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` that is >= x (the YOLOv5 channel rule)."""
    return math.ceil(x / divisor) * divisor


def build_layers(arch: dict[str, Any], ch: int) -> tuple[nn.Sequential, list[int]]:
    """Turn an architecture dict into (layers, save list). Errors name the layer index."""
    try:
        nc, anchors = arch["nc"], arch["anchors"]
        gd, gw = float(arch["depth_multiple"]), float(arch["width_multiple"])
        rows = list(arch["backbone"]) + list(arch["head"])
        if not (isinstance(anchors, int) or (isinstance(anchors, (list, tuple)) and anchors
                                             and all(isinstance(a, (list, tuple)) for a in anchors))):
            raise TypeError(f"'anchors' must be a list of per-level lists or a count, got {anchors!r}")
        na = len(anchors[0]) // 2 if isinstance(anchors, (list, tuple)) else anchors
        no = na * (nc + 5)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"architecture dict is missing or has a malformed key: {e}") from e
    literals = {"nc": nc, "anchors": anchors, "None": None, "True": True, "False": False}

    layers: list[nn.Module] = []
    save: list[int] = []
    out_ch: list[int] = []  # output channels of each layer
    for i, row in enumerate(rows):
        if not (isinstance(row, (list, tuple)) and len(row) == 4):
            raise ModelError(f"layer {i}: expected [from, number, module, args], got {row!r}")
        f, n, name, args = row
        block = MODULES.get(name) if isinstance(name, str) else None
        if block is None:
            raise ModelError(f"layer {i}: unknown module {name!r} (known: {', '.join(MODULES)})")
        try:
            module, c2 = _build_layer(i, f, n, block, list(args), ch, out_ch, literals, gd, gw, no)
        except ModelError:
            raise
        except (TypeError, ValueError, IndexError, KeyError, RuntimeError) as e:
            raise ModelError(f"layer {i} ({name}): cannot build from {row!r}: {e}") from e
        # Ultralytics' routing attributes; torch's stubs type Module.__setattr__ values as Tensor | Module only
        module.i, module.f = i, f  # type: ignore[assignment]
        module.np = sum(p.numel() for p in module.parameters())  # type: ignore[assignment]
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(module)
        out_ch.append(c2)
    if not layers or not isinstance(layers[-1], Detect):
        raise ModelError("the last layer of the architecture must be Detect")
    return nn.Sequential(*layers), sorted(save)


def _build_layer(i: int, f: int | list[int], n: int, block: type[nn.Module], args: list[Any], ch: int,
                 out_ch: list[int], literals: dict[str, Any], gd: float, gw: float,
                 no: int) -> tuple[nn.Module, int]:
    """One architecture row -> (module, output channels)."""
    args = [literals.get(a, a) if isinstance(a, str) else a for a in args]

    def c_in(j: int) -> int:
        return ch if (i == 0 and j == -1) else out_ch[j]

    def one_input() -> int:
        if not isinstance(f, int):
            raise ModelError(f"layer {i}: {block.__name__} reads one earlier layer, got from={f!r}")
        return c_in(f)

    def several_inputs() -> list[int]:
        if isinstance(f, int):
            raise ModelError(f"layer {i}: {block.__name__} reads a list of earlier layers, got from={f!r}")
        return f

    n = max(round(n * gd), 1) if n > 1 else n  # depth rule
    if block in _CONV_LIKE:
        c1, c2 = one_input(), args[0]
        if c2 != no:
            c2 = make_divisible(c2 * gw, 8)  # width rule
        args = [c1, c2, *args[1:]]
        if block is C3:
            args.insert(2, n)  # C3 repeats its bottlenecks internally
            n = 1
    elif block is Concat:
        c2 = sum(c_in(j) for j in several_inputs())
    elif block is Detect:
        sources = several_inputs()
        args.append([c_in(j) for j in sources])
        if isinstance(args[1], int):  # anchors given as a count per level
            args[1] = [list(range(args[1] * 2))] * len(sources)
        c2 = 0
    else:  # nn.Upsample keeps the channel count
        c2 = one_input()
    module = nn.Sequential(*(block(*args) for _ in range(n))) if n > 1 else block(*args)
    return module, c2


# ---------------------------------------------------------------------------------------------
# Official architectures (models/yolov5{n,s,m,l,x}.yaml and models/hub/yolov5{n,s,m,l,x}6.yaml)
# ---------------------------------------------------------------------------------------------


def _p5(depth: float, width: float) -> dict[str, Any]:
    """P5 models: 3 output levels (strides 8, 16, 32)."""
    return {
        "nc": 80,
        "depth_multiple": depth,
        "width_multiple": width,
        "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]],
        "backbone": [
            [-1, 1, "Conv", [64, 6, 2, 2]],  # 0-P1/2
            [-1, 1, "Conv", [128, 3, 2]],  # 1-P2/4
            [-1, 3, "C3", [128]],
            [-1, 1, "Conv", [256, 3, 2]],  # 3-P3/8
            [-1, 6, "C3", [256]],
            [-1, 1, "Conv", [512, 3, 2]],  # 5-P4/16
            [-1, 9, "C3", [512]],
            [-1, 1, "Conv", [1024, 3, 2]],  # 7-P5/32
            [-1, 3, "C3", [1024]],
            [-1, 1, "SPPF", [1024, 5]],  # 9
        ],
        "head": [
            [-1, 1, "Conv", [512, 1, 1]],
            [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
            [[-1, 6], 1, "Concat", [1]],  # cat backbone P4
            [-1, 3, "C3", [512, False]],  # 13
            [-1, 1, "Conv", [256, 1, 1]],
            [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
            [[-1, 4], 1, "Concat", [1]],  # cat backbone P3
            [-1, 3, "C3", [256, False]],  # 17 (P3/8-small)
            [-1, 1, "Conv", [256, 3, 2]],
            [[-1, 14], 1, "Concat", [1]],  # cat head P4
            [-1, 3, "C3", [512, False]],  # 20 (P4/16-medium)
            [-1, 1, "Conv", [512, 3, 2]],
            [[-1, 10], 1, "Concat", [1]],  # cat head P5
            [-1, 3, "C3", [1024, False]],  # 23 (P5/32-large)
            [[17, 20, 23], 1, "Detect", ["nc", "anchors"]],  # Detect(P3, P4, P5)
        ],
    }


def _p6(depth: float, width: float) -> dict[str, Any]:
    """P6 models: 4 output levels (strides 8, 16, 32, 64)."""
    return {
        "nc": 80,
        "depth_multiple": depth,
        "width_multiple": width,
        "anchors": [
            [19, 27, 44, 40, 38, 94],  # P3/8
            [96, 68, 86, 152, 180, 137],  # P4/16
            [140, 301, 303, 264, 238, 542],  # P5/32
            [436, 615, 739, 380, 925, 792],  # P6/64
        ],
        "backbone": [
            [-1, 1, "Conv", [64, 6, 2, 2]],  # 0-P1/2
            [-1, 1, "Conv", [128, 3, 2]],  # 1-P2/4
            [-1, 3, "C3", [128]],
            [-1, 1, "Conv", [256, 3, 2]],  # 3-P3/8
            [-1, 6, "C3", [256]],
            [-1, 1, "Conv", [512, 3, 2]],  # 5-P4/16
            [-1, 9, "C3", [512]],
            [-1, 1, "Conv", [768, 3, 2]],  # 7-P5/32
            [-1, 3, "C3", [768]],
            [-1, 1, "Conv", [1024, 3, 2]],  # 9-P6/64
            [-1, 3, "C3", [1024]],
            [-1, 1, "SPPF", [1024, 5]],  # 11
        ],
        "head": [
            [-1, 1, "Conv", [768, 1, 1]],
            [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
            [[-1, 8], 1, "Concat", [1]],  # cat backbone P5
            [-1, 3, "C3", [768, False]],  # 15
            [-1, 1, "Conv", [512, 1, 1]],
            [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
            [[-1, 6], 1, "Concat", [1]],  # cat backbone P4
            [-1, 3, "C3", [512, False]],  # 19
            [-1, 1, "Conv", [256, 1, 1]],
            [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
            [[-1, 4], 1, "Concat", [1]],  # cat backbone P3
            [-1, 3, "C3", [256, False]],  # 23 (P3/8-small)
            [-1, 1, "Conv", [256, 3, 2]],
            [[-1, 20], 1, "Concat", [1]],  # cat head P4
            [-1, 3, "C3", [512, False]],  # 26 (P4/16-medium)
            [-1, 1, "Conv", [512, 3, 2]],
            [[-1, 16], 1, "Concat", [1]],  # cat head P5
            [-1, 3, "C3", [768, False]],  # 29 (P5/32-large)
            [-1, 1, "Conv", [768, 3, 2]],
            [[-1, 12], 1, "Concat", [1]],  # cat head P6
            [-1, 3, "C3", [1024, False]],  # 32 (P6/64-xlarge)
            [[23, 26, 29, 32], 1, "Detect", ["nc", "anchors"]],  # Detect(P3, P4, P5, P6)
        ],
    }


_SCALES = {"n": (0.33, 0.25), "s": (0.33, 0.50), "m": (0.67, 0.75), "l": (1.0, 1.0), "x": (1.33, 1.25)}

# Architecture dicts by model name, in the checkpoint ``yaml`` form (nc=80; pass nc= to YOLOv5
# for other class counts). Treat as constants: YOLOv5 deep-copies the dict it is given.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    **{f"yolov5{k}": _p5(d, w) for k, (d, w) in _SCALES.items()},
    **{f"yolov5{k}6": _p6(d, w) for k, (d, w) in _SCALES.items()},
}
