"""Study variants: runs that differ from the study's recipe in fit options other than the loss.

    --variant NAME:key=value[,key=value ...]      e.g.  ce-init-off:data_init=off   ce-mean:loss_reduction=mean

Keys are FitConfig fields (trainer/config.py); values are parsed by the type of the field's default (bool:
true/false/1/0/yes/no). A variant trains `ce` unless it sets `loss`, with the study's budget, seed, data and
validation, which it may not change (they are what makes its row comparable), and is reported as its own row.
"""
from __future__ import annotations

import re
from dataclasses import fields

from trainer.config import FitConfig, FitError

VARIANT_LOSS = "ce"                 # the loss a variant trains unless it sets one
# what every run of a study shares, so that rows compare: the budget, the seed, the data and its validation
FIXED = ("data", "out", "resume", "steps", "epochs", "seed", "save_every", "val_data", "val_every", "val_limit",
         "device", "workers")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class VariantError(ValueError):
    """A --variant that cannot be parsed or names an unknown or fixed option."""


def _value(text: str, key: str, default):
    try:
        if isinstance(default, bool):
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError
            return text.lower() in _TRUE
        if isinstance(default, (int, float, str)):
            return type(default)(text)
    except ValueError:
        raise VariantError(f"{key}={text}: not a {type(default).__name__}") from None
    raise VariantError(f"{key}: a {type(default).__name__} option cannot be set by a variant")


def parse_variant(spec: str) -> tuple[str, dict]:
    """'NAME:key=value,...' -> (NAME, {field: value}); VariantError with a one-line reason otherwise."""
    name, sep, body = spec.partition(":")
    if not sep or not _NAME.fullmatch(name) or not body:
        raise VariantError(f"--variant {spec!r}: expected NAME:key=value[,key=value ...], NAME of letters, "
                           "digits, '-', '_' or '.'")
    defaults = FitConfig()
    known = {f.name for f in fields(FitConfig)}
    options = {}
    for item in body.split(","):
        key, eq, text = (s.strip() for s in item.partition("="))
        if not eq or not key:
            raise VariantError(f"--variant {spec!r}: {item!r} is not key=value")
        if key not in known:
            raise VariantError(f"--variant {spec!r}: {key!r} is not a fit option; known: {', '.join(sorted(known))}")
        if key in FIXED:
            raise VariantError(f"--variant {spec!r}: {key} is the same for every run of a study (equal budgets)")
        try:
            options[key] = _value(text, key, getattr(defaults, key))
        except VariantError as e:
            raise VariantError(f"--variant {spec!r}: {e}") from None
    try:
        FitConfig(**options)                              # the option's own checks (ranges, choices)
    except FitError as e:
        raise VariantError(f"--variant {spec!r}: {e}") from None
    from trainer.losses import LOSSES
    loss = options.setdefault("loss", VARIANT_LOSS)
    if loss not in LOSSES:
        raise VariantError(f"--variant {spec!r}: unknown loss {loss!r}; known: {sorted(LOSSES)}")
    return name, options


def parse_variants(specs, losses) -> dict:
    """{NAME: options} of every --variant, in order; names are run folders, so unique and not a loss."""
    out = {}
    for spec in specs:
        name, options = parse_variant(spec)
        if name in out or name in losses:
            raise VariantError(f"--variant {spec!r}: the name {name!r} is already a run of this study")
        out[name] = options
    return out
