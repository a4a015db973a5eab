"""A trained network as a colorizer: load_colorizer(ref) -> Colorizer.predict_ab(L).

`ref` is a file or a checkpoint name (colorfast.hub: `eccv16-released`, `siggraph17-released` are downloaded
once). Accepted files: a colorfast training checkpoint (RUN_DIR/last.pt), a bare state dict in the released
ECCV16 PyTorch layout (model1..model8, model_out; decoded with its own 313 bins) or in the released SIGGRAPH17
layout (model1..model10, shortcuts, model_class, model_out; trainer/siggraph17.py), an .onnx file written by `cli.py export`
(run by onnxruntime: colorfast.onnx_runtime) or a .safetensors file written by `cli.py export --format
safetensors` (colorfast.safetensors_io). .pt files are read with torch.load(weights_only=True)
(trainer.checkpoint), so a file carrying pickled code is refused.

How a colorizer decodes is part of it. Released weights decode as the reference PyTorch port does
(richzhang/colorization, colorizers/eccv16.py): a plain softmax followed by `model_out`, which is the
annealed mean at T = 1 (the T = 0.38 annealing of the deploy prototxt is baked into the released weights,
not applied again), and ab upsampled bilinearly. Our CE/focal checkpoints use the paper's T = 0.38 and
bicubic upsampling. An explicit temperature overrides either.

A guided network (SIGGRAPH17, `guided`) decodes as its reference does (richzhang/colorization demo): the
regression head's ab, at the network's full input resolution, upsampled bilinearly; no temperature. It takes
hints, (hint_ab, hint_mask) planes at L's resolution (colorfast.hints.hint_planes); without them it is an
automatic colorizer. Its class head is what `suggest` reads: the colours the network finds likely at a point.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from colorfast.hub import is_named, resolve_checkpoint
from trainer import checkpoint
from trainer.decode import DEFAULT_TEMPERATURE, check_temperature, decode
from trainer.losses import LOSSES
from trainer import siggraph17
from trainer.models import AB_NORM, MODELS, ColorNet, create_model, from_released, is_released_layout, load_trunk

RELEASED_TEMPERATURE = 1.0       # plain softmax mean, as the reference decodes its released weights
RUNTIMES = ("auto", "torch", "onnx")
_INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


@dataclass
class Colorizer:
    model: ColorNet | None            # in eval mode, on `device` (None for the onnx runtime)
    loss: str                         # "ce" | "l2" | "focal" | "focal-exact" (released weights: "ce")
    prior: dict | None                # {"centers", "prob", "weights"} numpy arrays of the training shards, if known
    source: str                       # the file (or name) it came from
    device: torch.device
    released: bool = False            # released ECCV16 / SIGGRAPH17 weights: decoded as the reference does
    runtime: str = "torch"            # "torch" | "onnx"
    weights: str = "raw"              # "raw" | "ema": which of a checkpoint's weights were loaded

    @property
    def centers(self) -> torch.Tensor | None:
        """(Q, 2) ab bin centres the logits refer to; None for an l2 model."""
        return self.model.centers

    @property
    def guided(self) -> bool:
        """True for a network that takes colour hints (SIGGRAPH17): predict_ab(..., hints=...), suggest."""
        return bool(getattr(self.model, "guided", False))

    @property
    def default_temperature(self) -> float | None:
        """The temperature used when none is given; None for an l2 model (no distribution to anneal) and for a
        guided one (its colours are its regression head's)."""
        if self.loss == "l2" or self.guided:
            return None
        return RELEASED_TEMPERATURE if self.released else DEFAULT_TEMPERATURE

    @property
    def upsample(self) -> str:
        """How the 1/4-resolution ab is brought to full size: "bilinear" (the reference's) or "bicubic"."""
        return "bilinear" if self.released or self.guided else "bicubic"

    @property
    def interpolation(self) -> int:
        """self.upsample as an OpenCV flag, for cv2.resize of ab (H, W, 2) float32."""
        return _INTERPOLATION[self.upsample]

    def temperature_for(self, temperature: float | None = None) -> float:
        """The temperature a prediction uses: `temperature` if given, else this colorizer's default.
        ValueError in one line for one that is not finite or out of bounds (trainer.decode.check_temperature),
        even for an l2 model, which ignores it: a typo is a typo whatever the checkpoint."""
        if temperature is not None:
            return check_temperature(temperature)
        temperature = self.default_temperature
        return DEFAULT_TEMPERATURE if temperature is None else float(temperature)   # l2: unused

    def describe(self, temperature: float | None = None) -> str:
        """One line for the user: which decoding and upsampling this colorizer's output had."""
        up = f"{self.upsample} upsampling" + (", onnxruntime (CPU)" if self.runtime == "onnx" else "")
        if self.guided:
            return f"regression head (no temperature; takes --hints), {up}"
        if self.loss == "l2":
            return f"l2 regression (no temperature), {up}"
        t = self.temperature_for(temperature)
        why = ("--temperature" if temperature is not None else
               "released weights: plain softmax mean, as the reference decodes them" if self.released else
               "annealed mean, the paper's default for our checkpoints")
        return f"temperature {t:g} ({why}), {up}"

    @torch.no_grad()
    def predict_ab(self, L: torch.Tensor, temperature: float | None = None, hints=None) -> torch.Tensor:
        """L (B, 1, H, W) float L* in 0..100 -> ab in ab units, float32 on L's device, at the network's output
        resolution: (B, 2, H // 4, W // 4), or (B, 2, H, W) for a guided network (its regression head).
        Class models decode with the annealed mean at temperature_for(temperature); l2 and guided ones ignore it.
        hints: (hint_ab (B|1, 2, H, W), hint_mask (B|1, 1, H, W)) at L's resolution, guided networks only.
        H and W need not be multiples of 8: L is reflect-padded up to them and the prediction cropped back."""
        H, W = L.shape[-2:]
        t = self.temperature_for(temperature)
        if self.guided:
            _, ab = self.model(self._padded(L), *self._padded_hints(hints, L))
            return (ab.float() * AB_NORM)[..., :H, :W].to(L.device)
        self._no_hints(hints)
        ab = self._forward_ab(self._padded(L), t)
        return ab[..., : H // 4, : W // 4].to(L.device)

    @torch.no_grad()
    def suggest(self, L: torch.Tensor, x: int, y: int, hints=None, k: int = 5) -> list[tuple[float, float, float]]:
        """The colours the class head finds likely at network pixel (x, y) of L (1, 1, H, W), given the hints so
        far: [(a, b, probability)] of its k most likely bins, most likely first (plain softmax, T = 1: the
        distribution itself, as the reference GUI shows it)."""
        H, W = L.shape[-2:]
        if not (0 <= x < W and 0 <= y < H):
            raise ValueError(f"point ({x}, {y}) is outside the {W} x {H} network input")
        if self.model is None or self.centers is None:
            raise ValueError(f"{self.source}: this network has no class head to suggest colours from")
        x_in = self._padded(L[:1])
        if self.guided:
            logits = self.model(x_in, *self._padded_hints(hints, L[:1]))[0]
        else:
            self._no_hints(hints)
            logits = self.model(x_in)
        p = torch.softmax(logits[0, :, y // 4, x // 4].float(), 0)
        top = torch.topk(p, min(k, len(p)))
        centers = self.centers.float()
        return [(float(centers[i, 0]), float(centers[i, 1]), float(v)) for v, i in zip(top.values, top.indices)]

    def _no_hints(self, hints) -> None:
        if hints is not None:
            raise ValueError(f"{self.source}: this network takes no hints (use a guided checkpoint, e.g. "
                             f"siggraph17-released)")

    def _padded_hints(self, hints, L: torch.Tensor) -> tuple:
        """(hint_ab, hint_mask) at L's resolution -> padded with zeros (no hints there) as _padded pads L, a batch
        of one repeated for every image of L; None -> (None, None): the network's own no-hint input."""
        if hints is None:
            return None, None
        H, W = L.shape[-2:]
        hint_ab, hint_mask = hints
        if hint_ab.shape[-2:] != (H, W) or hint_mask.shape[-2:] != (H, W) or hint_ab.shape[-3] != 2 \
                or hint_mask.shape[-3] != 1:
            raise ValueError(f"hint planes {tuple(hint_ab.shape)} / {tuple(hint_mask.shape)} do not fit L "
                             f"{tuple(L.shape)}: expected (B, 2, H, W) and (B, 1, H, W)")
        pad = (0, -W % 8, 0, -H % 8)
        return tuple(F.pad(t.to(self.device, torch.float32), pad).expand(L.shape[0], -1, -1, -1)
                     for t in (hint_ab, hint_mask))

    @torch.no_grad()
    def predict_raw(self, L: torch.Tensor) -> torch.Tensor:
        """L (B, 1, H, W) float L* in 0..100 -> the head's output (B, C, H // 4, W // 4) on L's device: Q logits
        over `centers`, or ab / AB_NORM for an l2 model (the scoring of evaluate needs logits for CE); a guided
        network's class head without hints. Padded as predict_ab pads."""
        if self.model is None:
            raise ValueError(f"{self.source}: the {self.runtime} runtime gives decoded colours only")
        H, W = L.shape[-2:]
        out = self.model(self._padded(L))
        out = out[0] if self.guided else out
        return out[..., : H // 4, : W // 4].to(L.device)

    def _padded(self, L: torch.Tensor) -> torch.Tensor:
        """L (B, 1, H, W) -> float32 on self.device, reflect-padded (replicated when too small to reflect) at the
        bottom and right up to multiples of 8, the network's stride."""
        if L.ndim != 4 or L.shape[1] != 1:
            raise ValueError(f"L must be (B, 1, H, W), got {tuple(L.shape)}")
        H, W = L.shape[-2:]
        ph, pw = -H % 8, -W % 8
        x = L.to(self.device, torch.float32)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(H, W) > max(ph, pw) else "replicate")
        return x

    def _forward_ab(self, x: torch.Tensor, temperature: float) -> torch.Tensor:
        """x (B, 1, H, W) on self.device, H and W multiples of 8 -> ab (B, 2, H/4, W/4)."""
        return decode(self.model(x), self.model.centers, temperature)


def released_model(state: dict, centers: torch.Tensor) -> ColorNet:
    """The registered network whose shapes fit a released-layout state dict (eccv16 for the published file;
    a narrower one for a model saved in that layout). Shapes are compared on the meta device: no allocation."""
    for name in MODELS:
        with torch.device("meta"):
            probe = create_model(name, len(centers), centers)
        if all(k in state and state[k].shape == v.shape for k, v in probe.state_dict().items()
               if k != "centers" and not k.endswith("num_batches_tracked")):
            return create_model(name, len(centers), centers)
    return create_model("eccv16", len(centers), centers)        # load_trunk then names what does not fit


def checkpoint_model(raw: dict, state: dict, path) -> ColorNet:
    """The (untrained) network a colorfast checkpoint describes, its claims checked against each other, so that
    a crafted or inconsistent file is refused in one line rather than failing inside torch."""
    name, channels, loss, centers = raw["model_name"], raw["out_channels"], raw["loss"], state.get("centers")
    if name not in MODELS or loss not in LOSSES:
        raise checkpoint.CheckpointError(f"{path}: model_name {name!r} / loss {loss!r}: this code knows the models "
                                         f"{sorted(MODELS)} and the losses {sorted(LOSSES)}")
    if LOSSES[loss].head == "classes":
        if centers is None or centers.shape != (channels, 2) or channels < 2 or not centers.isfinite().all():
            got = "none" if centers is None else f"shape {tuple(centers.shape)}"
            raise checkpoint.CheckpointError(f"{path}: a {loss} model needs finite bin centres of shape "
                                             f"(out_channels={channels}, 2) in model.centers, it has {got}")
    elif channels != 2 or centers is not None:
        raise checkpoint.CheckpointError(f"{path}: an l2 model has out_channels 2 and no bin centres, this one "
                                         f"claims {channels}" + (" and has centres" if centers is not None else ""))
    return create_model(name, channels, centers)


def load_colorizer(ref, device="cpu", runtime: str = "auto", announce: bool = False) -> Colorizer:
    """A checkpoint file or name -> Colorizer on `device` ("auto": CUDA if visible).
    A checkpoint of a run with --ema loads its EMA weights (the ones validated and selected for best.pt);
    `announce` says so on stderr.
    runtime "auto" runs .onnx files with onnxruntime and everything else with torch.
    Raises checkpoint.CheckpointError naming the file when it cannot or must not be loaded, hub.HubError when
    a named checkpoint cannot be fetched, extras.MissingExtra when onnxruntime is not installed."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    path = resolve_checkpoint(ref)
    is_onnx = path.suffix.lower() == ".onnx"
    if runtime == "onnx" or (runtime == "auto" and is_onnx):
        if not is_onnx:
            raise checkpoint.CheckpointError(
                f"{ref}: --runtime onnx runs an .onnx file; make one with `python cli.py export --checkpoint {ref} "
                f"--out model.onnx` and pass --checkpoint model.onnx")
        from colorfast.onnx_runtime import load_onnx_colorizer
        return load_onnx_colorizer(path, device=device)
    if is_onnx:
        raise checkpoint.CheckpointError(f"{ref}: an ONNX file runs with --runtime onnx (or auto), not torch")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    source = f"{ref} ({path})" if is_named(ref) else str(path)
    if path.suffix.lower() == ".safetensors":
        from colorfast.safetensors_io import load_safetensors_colorizer
        return load_safetensors_colorizer(path, device, source)
    raw = checkpoint.load_any(path)
    released, weights = False, "raw"
    if raw.get("format") == checkpoint.FORMAT:
        checkpoint.check_fields(raw, path, checkpoint.COLORIZER_FIELDS)
        state = raw["model"]
        if raw.get("ema") is not None:
            state, weights = raw["ema"], "ema"
            if announce:
                print(f"{path}: using its EMA weights (decay {raw.get('config', {}).get('ema')}, "
                      f"step {raw.get('step')})", file=sys.stderr)
        model = checkpoint_model(raw, state, path)
        loss = raw["loss"]
        prior = {k: np.asarray(v) for k, v in raw["prior"].items()} if raw.get("prior") else None
    elif is_released_layout(raw):
        try:
            state, centers = from_released(raw)
        except ValueError as e:
            raise checkpoint.CheckpointError(f"{path}: {e}") from None
        model = released_model(state, centers)
        loss, prior, released = "ce", None, True
    elif siggraph17.is_released_layout(raw):
        try:
            state, centers, name = siggraph17.from_released(raw)
        except ValueError as e:
            raise checkpoint.CheckpointError(f"{path}: {e}") from None
        model = create_model(name, len(centers), centers)
        loss, prior, released = "ce", None, True
    else:
        raise checkpoint.CheckpointError(f"{path}: neither a colorfast checkpoint nor a released ECCV16 or SIGGRAPH17 "
                                         f"state dict (keys model1.* .. model8.*, model_out.weight; or model1.* .. "
                                         f"model10.*, model_class.0.weight, model_out.0.weight)")
    try:
        load_trunk(model, state)
    except ValueError as e:
        raise checkpoint.CheckpointError(f"{path}: {e}") from None
    return Colorizer(model=model.to(device).eval(), loss=loss, prior=prior, source=source, device=device,
                     released=released, weights=weights)

