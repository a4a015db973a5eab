"""Mutation check of the maths: does a unit test fail for each single plausible bug?

    python tools/mutants.py                 # every mutant; table on stdout and in artifacts/mutants.md
    python tools/mutants.py --list          # the mutants, and whether each snippet is still in the code
    python tools/mutants.py --only lam-swapped,psnr-range --jobs 2

Each mutant below is one small bug (a wrong constant, a swapped term, a floor for a round) in the formulas
that decide what the model learns and how it is scored: bins, soft encoding, prior and weights, losses,
decoding, crops and flips, the network's input and output scaling, the Lab conversion and the metrics. For
each, the git-tracked files of this checkout (plus untracked ones git does not ignore, so new tests count)
are copied into a temporary folder, the one snippet is replaced (it must occur exactly once: a snippet no
longer found means the list has fallen out of step with the code, and is reported, never skipped), and the
mutant's own narrow test selection runs there with `pytest -x`. A mutant is "killed" when a test fails, and
the table names the first failing test; "survived" means no test sees that bug: write one.
The recorded study figures (tests/colorfast/test_results_doc.py) would catch some of these too, but only
after a long run; they are never part of a selection.

Before the mutants, every distinct selection runs once on the unmutated copy: a selection that fails there
would make its mutants look killed, so the run stops instead.

Adding a mutant: append a Mutant(id, file, old, new, tests, what) record to MUTANTS, with `old` a snippet as
small as possible (one expression) that occurs exactly once in `file`, and `tests` the narrowest pytest
arguments (node ids, or a file with -k) that should fail; run `--only ID` and watch it be killed.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "artifacts" / "mutants.md"
TIMEOUT_S = 600                              # per pytest run; a hung mutant is recorded as an error
EXCLUDED_TEST = "tests/colorfast/test_results_doc.py"     # the recorded study figures: never a selection


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str                    # path relative to the repository root
    old: str                     # exact snippet, found exactly once in `file`
    new: str                     # its replacement
    tests: tuple[str, ...]       # pytest arguments: node ids, or a file and -k EXPR
    what: str                    # the bug, in one line


T_BINS = ("tests/pipeline/test_bins.py",)
T_SOFT = ("tests/pipeline/test_soft_encode.py::test_matches_brute_force_on_random_ab[10-5.0-30000]",
          "tests/pipeline/test_soft_encode.py::test_ties_go_to_the_lower_bin_index")
T_PRIOR = ("tests/pipeline/test_prior.py",)
T_L = ("tests/pipeline/test_contract.py::test_l_roundtrip_within_half_a_step",
       "tests/pipeline/test_preprocess.py::test_fast_stored_l_is_the_contract_l_to_uint8_to_the_byte")
T_LAB = ("tests/pipeline/test_images.py", "-k", "lab_agrees or lightness_of_greys or resize_center_crop")
T_TARGETS = ("tests/pipeline/test_preprocess.py::test_targets_are_the_4x4_area_mean_of_a_and_b_not_every_4th_pixel",)
T_LOSS = ("tests/trainer/test_losses.py", "-k", "dense_reference or block_term or focal_options or ce_logs")
T_STEP = ("tests/trainer/test_meaningful.py::test_forward_loss_equals_a_dense_reference_with_remapped_bins_and_rebalancing",)
T_FIT = ("tests/trainer/test_recipe_defaults.py",)
T_DECODE = ("tests/trainer/test_decode.py", "-k", "temperature_one or l2_output")
T_DATA = ("tests/trainer/test_data.py::test_crops_and_flips_keep_every_array_aligned",)
T_INPUT = ("tests/trainer/test_models.py::test_the_network_reads_l_star_centred_at_50_and_scaled_by_100[tiny]",)
T_LAYOUT = ("tests/trainer/test_meaningful.py::test_eccv16_matches_the_released_layout_conv_by_conv",)
T_RELEASED = tuple(f"tests/colorfast/test_released_decoding.py::{t}" for t in (
    "test_prediction_equals_the_reference_networks_at_quarter_resolution",
    "test_the_fixture_network_sees_its_input_so_the_reference_sees_how_l_enters",
    "test_full_resolution_ab_is_the_references_bilinear_upsampling"))
T_METRICS = ("tests/trainer/test_metrics.py",)
T_RECIPE = ("tests/trainer/test_recipe.py", "-k", "gray or reduction")
T_INIT = ("tests/trainer/test_init.py::test_every_conv_has_unit_output_variance_after_the_init",)
T_SCHED = tuple(f"tests/trainer/test_ema_schedule.py::{t}" for t in (
    "test_schedules_at_chosen_steps", "test_the_scheduler_gives_every_step_its_lr_from_scratch_and_from_a_resumed_step"))
T_EMA = ("tests/trainer/test_ema_schedule.py::test_ema_update_by_hand",)
T_SG_NET = ("tests/colorfast/test_siggraph17_released.py::test_ours_equals_the_reference_forward_with_and_without_hints",)
T_SG_GRID = ("tests/trainer/test_siggraph17.py::test_grid_centres_are_the_references_class_order",)
T_SG_LOSS = ("tests/trainer/test_siggraph17_fit.py", "-k", "class_loss_plus or regression_head_alone or gray_crop")
T_HINTS = ("tests/trainer/test_hint_sampling.py", "-k", "reference_loop or round_up or geometric or clipped_normal")
T_HINT_FILE = ("tests/colorfast/test_hints.py", "-k", "documented_format or scaled_position")

MUTANTS = [
    # ---- bins ---------------------------------------------------------------------------------------------
    Mutant("bins-floor", "pipeline/bins.py", "np.floor((np.asarray(ab, np.float64) + GRID / 2) / GRID)",
           "np.floor(np.asarray(ab, np.float64) / GRID)", T_BINS, "cells floored instead of rounded"),
    Mutant("bins-half-offset", "pipeline/bins.py", "(np.stack([ia - _OFFSET, ib - _OFFSET], axis=1) * GRID)",
           "((np.stack([ia - _OFFSET, ib - _OFFSET], axis=1) + 0.5) * GRID)", T_BINS,
           "bin centres at the cell corners' midpoints (+5) instead of multiples of 10"),
    Mutant("bins-axes-swapped", "pipeline/bins.py", "np.stack([ia - _OFFSET, ib - _OFFSET], axis=1)",
           "np.stack([ib - _OFFSET, ia - _OFFSET], axis=1)", T_BINS, "a and b of the bin centres swapped"),
    Mutant("bins-grid-8", "pipeline/bins.py", "GRID = 10.0 ", "GRID = 8.0 ", T_BINS, "bin size 8 instead of 10"),
    # ---- soft encoding ------------------------------------------------------------------------------------
    Mutant("soft-sigma", "pipeline/soft_encode.py", "np.float32(-1.0 / (2 * self.sigma ** 2))",
           "np.float32(-1.0 / (self.sigma ** 2))", T_SOFT, "Gaussian exp(-d^2 / sigma^2): the factor 2 lost"),
    Mutant("soft-normalise-max", "pipeline/soft_encode.py", "w /= w.sum(axis=1, keepdims=True)",
           "w /= w.max(axis=1, keepdims=True)", T_SOFT, "soft weights divided by their max, not their sum"),
    Mutant("soft-ties-high", "pipeline/soft_encode.py", "(best_d[j - 1] == d and best_i[j - 1] > q)",
           "(best_d[j - 1] == d and best_i[j - 1] < q)", T_SOFT, "equidistant bins ranked higher index first"),
    Mutant("soft-cell-radius", "pipeline/soft_encode.py", "r = CELL * math.sqrt(0.5)", "r = 0.0", T_SOFT,
           "lookup cells treated as points: candidates miss neighbours of off-centre colours"),
    Mutant("soft-sqrt-distance", "pipeline/soft_encode.py", "d = dx * dx + dy * dy", "d = abs(dx) + abs(dy)",
           T_SOFT, "neighbours ranked by L1 instead of Euclidean distance"),
    # ---- prior and rebalancing weights --------------------------------------------------------------------
    Mutant("lam-swapped", "pipeline/contract.py", "w = 1.0 / ((1 - lam) * prob + lam / len(prob))",
           "w = 1.0 / (lam * prob + (1 - lam) / len(prob))", T_PRIOR, "lambda and 1 - lambda swapped"),
    Mutant("weights-unscaled", "pipeline/contract.py", "return w / (prob * w).sum()", "return w / w.sum()",
           T_PRIOR, "weights normalised to sum 1 instead of E_p[w] = 1"),
    Mutant("weights-sqrt", "pipeline/contract.py", "w = 1.0 / ((1 - lam)", "w = 1.0 / np.sqrt((1 - lam)", T_PRIOR,
           "weights to the power -1/2 instead of -1"),
    Mutant("prior-sigma", "pipeline/contract.py", "np.exp(-d2 / (2 * sigma ** 2))", "np.exp(-d2 / (sigma ** 2))",
           T_PRIOR, "prior smoothed with a Gaussian of sigma / sqrt(2)"),
    Mutant("prior-unnormalised", "pipeline/contract.py", "    return prob / prob.sum()\n", "    return prob\n",
           T_PRIOR, "smoothed prior not renormalised"),
    # ---- L scale, Lab and targets -------------------------------------------------------------------------
    Mutant("l-scale-256", "pipeline/contract.py", "L_SCALE = 100.0 / 255.0", "L_SCALE = 100.0 / 256.0", T_L,
           "stored L scaled by 100/256"),
    Mutant("l-floor", "pipeline/contract.py", "np.clip(np.rint(np.asarray(L, np.float32)",
           "np.clip(np.floor(np.asarray(L, np.float32)", T_L, "L* truncated, not rounded, when stored"),
    Mutant("lab-256", "pipeline/images.py", "np.multiply(rgb, np.float32(1 / white_of(rgb.dtype)), dtype=np.float32)",
           "np.multiply(rgb, np.float32(1 / (white_of(rgb.dtype) + 1)), dtype=np.float32)", T_LAB,
           "sRGB read as value / 256"),
    Mutant("lab-bgr", "pipeline/images.py", "dtype=np.float32), cv2.COLOR_RGB2Lab)",
           "dtype=np.float32), cv2.COLOR_BGR2Lab)", T_LAB, "RGB converted as if it were BGR"),
    Mutant("lab-to-rgb-truncate", "pipeline/images.py", "np.clip(np.rint(rgb * np.float32(white)), 0, white)",
           "np.clip(rgb * np.float32(white), 0, white)", T_LAB, "Lab -> 8-bit RGB truncated instead of rounded"),
    Mutant("crop-corner", "pipeline/images.py", "y0, x0 = (h - s) // 2, (w - s) // 2", "y0, x0 = 0, 0", T_LAB,
           "the square cut from the top-left corner, not the centre"),
    Mutant("targets-subsampled", "pipeline/preprocess.py",
           "cv2.resize(lab, (T, T), interpolation=cv2.INTER_AREA)[..., 1:]", "lab[::4, ::4, 1:]", T_TARGETS,
           "ab targets every 4th pixel instead of the 4x4 area mean"),
    Mutant("step-l-unscaled", "trainer/step.py", ".unsqueeze(1).float() * contract.L_SCALE", ".unsqueeze(1).float()",
           T_STEP, "the training step feeds the network stored L (0..255), not L*"),
    # ---- losses -------------------------------------------------------------------------------------------
    Mutant("ce-unweighted", "trainer/losses.py", '{"loss": pixel_mean(tg.w * pix, tg)', '{"loss": pixel_mean(pix, tg)', T_LOSS,
           "CE without class rebalancing"),
    Mutant("ce-hard-target", "trainer/losses.py", "-(tg.nn_w * target_log_probs(logits, tg)).sum(1)",
           "-target_log_probs(logits, tg)[:, 0]", T_LOSS, "CE on the nearest bin only, soft weights ignored"),
    Mutant("ce-softmax-dim", "trainer/losses.py", "F.log_softmax(x.float(), dim=dim)",
           "F.log_softmax(x.float(), dim=-1)", T_LOSS, "softmax over the width instead of the classes"),
    Mutant("l2-scale", "trainer/losses.py", "(out.float() - tg.ab / AB_NORM)", "(out.float() - tg.ab / 100.0)",
           T_LOSS, "l2 target scaled by 1/100, not 1/AB_NORM"),
    Mutant("l2-half", "trainer/losses.py", '{"loss": pixel_mean(0.5 * (out.float()', '{"loss": pixel_mean((out.float()', T_LOSS,
           "l2 without its 1/2"),
    Mutant("focal-mask-sign", "trainer/losses.py", "torch.exp(-self.beta * t)", "torch.exp(self.beta * t)", T_LOSS,
           "focal mask weighs easy pixels more"),
    Mutant("focal-mean-norm", "trainer/losses.py", "global_max(kept.max())", "global_max(kept.mean())", T_LOSS,
           "focal t normalised by the mean, not the max, pixel loss"),
    Mutant("focal-exact-logp", "trainer/losses.py", "(1 - logp_k.exp()).pow(self.gamma)",
           "(1 - logp_k).pow(self.gamma)", T_LOSS, "focal-exact modulated by 1 - log p instead of 1 - p"),
    Mutant("block-size-ignored", "trainer/losses.py", "k = self.size\n", "k = 4\n", T_LOSS,
           "the block term always pools 4 x 4"),
    Mutant("block-temperature", "trainer/losses.py", "annealed_mean(out, self.centers, temperature=1.0)",
           "annealed_mean(out, self.centers)", T_LOSS, "the block term decodes at T = 0.38 instead of the mean"),
    Mutant("fit-block-size", "trainer/loop.py", "block_size=cfg.block_size", "block_size=4", T_FIT,
           "fit ignores --block-size"),
    Mutant("fit-weight-decay", "trainer/loop.py", "cfg.lr, cfg.weight_decay / cfg.decay_scale",
           "cfg.lr, 0.0 / cfg.decay_scale", T_FIT, "fit ignores --weight-decay"),
    Mutant("adam-betas", "trainer/step.py", "betas=(0.9, 0.99)", "betas=(0.9, 0.999)", T_FIT,
           "Adam's default betas instead of the recipe's (0.9, 0.99)"),
    Mutant("rebalance-farthest", "trainer/step.py", "w=rebal[nn_idx[:, 0]]", "w=rebal[nn_idx[:, -1]]", T_STEP,
           "pixels weighted by their farthest kept bin, not the nearest"),
    # ---- the reference's loss scale, gray crops and data init (issue 18) --------------------------------------
    Mutant("gray-any-pixel", "trainer/losses.py", ".flatten(1).any(1).float()", ".flatten(1).all(1).float()",
           T_RECIPE, "a crop counts as colourful only when every target pixel is"),
    Mutant("gray-threshold", "trainer/losses.py", "(ab.abs() > GRAY_AB)", "(ab.abs() > 2 * GRAY_AB)", T_RECIPE,
           "gray crops judged at abs(a) or abs(b) > 10, not the reference's 5"),
    Mutant("gray-normaliser", "trainer/losses.py", "(x * tg.keep.view(-1, *[1] * (x.dim() - 1))).mean()",
           "(x * tg.keep.view(-1, *[1] * (x.dim() - 1))).mean() * len(tg.keep) / tg.keep.sum().clamp_min(1)",
           T_RECIPE, "the loss divided by the kept crops, not the whole batch as the reference does"),
    Mutant("decay-scale-side", "trainer/config.py", "(self.crop / 4) ** 2", "(self.crop / 4)", T_RECIPE,
           "decay scaled by the target side, not the target pixels of a crop"),
    Mutant("eps-unscaled", "trainer/loop.py", "eps=ADAM_EPS / cfg.decay_scale", "eps=ADAM_EPS", T_RECIPE,
           "Adam's eps left at 1e-8 under the reference reduction"),
    Mutant("lsuv-variance", "trainer/init.py", "scale = (head_std if layer is head else 1.0) / std",
           "scale = (head_std if layer is head else 1.0) / std ** 2", T_INIT,
           "LSUV divides by the variance instead of the standard deviation"),
    Mutant("lsuv-head-unit", "trainer/init.py", "(head_std if layer is head else 1.0)", "1.0", T_INIT,
           "the classifier initialised to unit-variance logits"),
    # ---- decoding -----------------------------------------------------------------------------------------
    Mutant("decode-times-t", "trainer/decode.py", "torch.softmax(logits.float() / temperature, dim=1)",
           "torch.softmax(logits.float() * temperature, dim=1)", T_DECODE, "logits multiplied by T, not divided"),
    Mutant("decode-l2-scale", "trainer/decode.py", "return out.float() * AB_NORM", "return out.float() * 100.0",
           T_DECODE, "l2 head scaled back by 100, not AB_NORM"),
    Mutant("default-temperature", "trainer/decode.py", "DEFAULT_TEMPERATURE = 0.38", "DEFAULT_TEMPERATURE = 0.5",
           T_FIT, "annealing temperature 0.5 instead of the paper's 0.38"),
    Mutant("released-temperature", "colorfast/colorizer.py", "RELEASED_TEMPERATURE = 1.0",
           "RELEASED_TEMPERATURE = DEFAULT_TEMPERATURE", T_RELEASED, "released weights annealed a second time"),
    Mutant("released-bicubic", "colorfast/colorizer.py",
           'return "bilinear" if self.released or self.guided else "bicubic"',
           'return "bilinear" if self.guided else "bicubic"', T_RELEASED, "released weights upsampled bicubically, not as the reference"),
    # ---- the network's input and output scaling -----------------------------------------------------------
    Mutant("input-uncentred", "trainer/models.py", "x = (L - L_CENT) / L_NORM", "x = L / L_NORM",
           T_INPUT + T_RELEASED, "network input L / 100 instead of (L - 50) / 100"),
    Mutant("input-255", "trainer/models.py", "x = (L - L_CENT) / L_NORM", "x = (L - L_CENT) / 255.0",
           T_INPUT + T_RELEASED, "network input divided by 255 instead of 100"),
    Mutant("ab-norm-100", "trainer/base_color.py", "L_CENT, L_NORM, AB_NORM = 50.0, 100.0, 110.0",
           "L_CENT, L_NORM, AB_NORM = 50.0, 100.0, 100.0", T_RELEASED, "released output scale ab / 100, not / 110"),
    Mutant("released-centres-transposed", "trainer/models.py", "w[:, :, 0, 0].t().float() * AB_NORM",
           "w[:, :, 0, 0].float().reshape(-1, 2) * AB_NORM", T_RELEASED,
           "model_out's (2, Q) read as (Q, 2) without transposing"),
    Mutant("dilation-lost", "trainer/models.py", "(3, 2, 1), (3, 2, 1), (3, 1, 1))", "(3, 1, 1), (3, 2, 1), (3, 1, 1))",
           T_LAYOUT, "model5 without its dilation 2"),
    # ---- crops and flips ----------------------------------------------------------------------------------
    Mutant("crop-off-grid", "trainer/data.py", "size=(len(self), 2), dtype=np.int16) * np.int16(STRIDE)",
           "size=(len(self), 2), dtype=np.int16) * np.int16(3)", T_DATA, "crop offsets not on the 4-pixel grid"),
    Mutant("flip-l-only", "trainer/data.py", "L, tg = L[:, ::-1], [a[..., ::-1] for a in tg]",
           "L, tg = L[:, ::-1], tg", T_DATA, "a flip mirrors L but not its targets"),
    Mutant("crop-xy-swapped", "trainer/data.py", "y // STRIDE, x // STRIDE", "x // STRIDE, y // STRIDE", T_DATA,
           "targets cropped at (x, y) instead of (y, x)"),
    Mutant("flip-always", "trainer/data.py", ".astype(bool) & self.flip", ".astype(bool)", T_DATA,
           "--no-flip ignored"),
    # ---- the recipe's defaults ----------------------------------------------------------------------------
    Mutant("default-sigma", "pipeline/config.py", "sigma: float = 5.0 ", "sigma: float = 10.0 ", T_FIT,
           "soft-encoding and prior sigma 10 by default"),
    Mutant("default-lam", "pipeline/config.py", "lam: float = 0.5 ", "lam: float = 0.25 ", T_FIT,
           "lambda 0.25 by default"),
    Mutant("default-batch", "trainer/config.py", "batch_size: int = 40 ", "batch_size: int = 32 ", T_FIT,
           "batch 32 by default (FitConfig)"),
    Mutant("default-crop-cli", "colorfast/cli_options.py",
           'default=176, callback=net_size,\n                 help="Random crop side',
           'default=224, callback=net_size,\n                 help="Random crop side', T_FIT,
           "fit --crop 224 by default (the CLI's own default)"),
    Mutant("default-lr-cli", "colorfast/cli_options.py", '"--lr", default=3.16e-5,', '"--lr", default=1e-4,', T_FIT,
           "fit --lr 1e-4 by default (the CLI's own default)"),
    # ---- lr schedules and the weights' EMA ----------------------------------------------------------------
    Mutant("warmup-from-zero", "trainer/schedule.py", "return (step + 1) / warmup", "return step / warmup", T_SCHED,
           "warm-up starts at lr 0 (its first step wasted) and ends one step short of the base lr"),
    Mutant("warmup-one-longer", "trainer/schedule.py", "if warmup and step < warmup:",
           "if warmup and step <= warmup:", T_SCHED, "warm-up one step longer, overshooting the base lr"),
    Mutant("step-fractional", "trainer/schedule.py", "gamma ** (step // size)", "gamma ** (step / size)", T_SCHED,
           "step schedule decays smoothly instead of in steps"),
    Mutant("step-reference-batch", "trainer/schedule.py", "REFERENCE_STEP_SAMPLES = 215_000 * 40",
           "REFERENCE_STEP_SAMPLES = 215_000 * 32", T_SCHED, "reference decay interval counted in batches of 32"),
    Mutant("cosine-span-total", "trainer/schedule.py", "span = max(1, total - warmup)", "span = max(1, total)",
           T_SCHED, "cosine spans the whole run instead of the steps after the warm-up (never reaches 0)"),
    Mutant("cosine-full-period", "trainer/schedule.py", "math.cos(math.pi * min(", "math.cos(2 * math.pi * min(",
           T_SCHED, "cosine over a full period: the lr comes back up"),
    Mutant("scheduler-resume-ahead", "trainer/schedule.py", "last_epoch=step - 1)", "last_epoch=step)", T_SCHED,
           "a resumed (or fresh) run's scheduler one step ahead"),
    Mutant("ema-no-warmup", "trainer/ema.py", "min(self.decay, (1 + self.updates) / (10 + self.updates))",
           "self.decay", T_EMA, "EMA decay at its final value from the first update"),
    Mutant("ema-decay-complement", "trainer/ema.py", "get_ema_multi_avg_fn(self.current_decay())",
           "get_ema_multi_avg_fn(1 - self.current_decay())", T_EMA, "EMA weight on the new weights and the old swapped"),
    Mutant("ema-bn-frozen", "trainer/ema.py", "floats = [k for k, v in mine.items() if v.is_floating_point()]",
           "floats = [k for k, _ in self.model.named_parameters()]", T_EMA,
           "BatchNorm running statistics not averaged (AveragedModel's default, use_buffers=False)"),
    Mutant("ema-counter-stale", "trainer/ema.py", "v.copy_(theirs[k])", "v.copy_(v)", T_EMA,
           "BatchNorm's step counter not followed"),
    Mutant("ema-load-restarts", "trainer/ema.py", "        self.updates = updates\n", "        self.updates = 0\n",
           T_EMA, "a resumed EMA restarts its decay warm-up"),
    # ---- SIGGRAPH17: the network's input scaling, its classes, its two-head loss, the simulated and user hints ----
    Mutant("sg-hint-scale", "trainer/siggraph17.py", "hint_ab / AB_NORM, hint_mask), 1)",
           "hint_ab / L_NORM, hint_mask), 1)", T_SG_NET, "hint ab scaled by 1/100 instead of the reference's 1/110"),
    Mutant("sg-l-centre", "trainer/siggraph17.py", "((L - L_CENT) / L_NORM, hint_ab", "(L / L_NORM, hint_ab",
           T_SG_NET, "SIGGRAPH17's L not centred at 50"),
    Mutant("sg-grid-order", "trainer/siggraph17.py", 'torch.meshgrid(steps, steps, indexing="ij")',
           'torch.meshgrid(steps, steps, indexing="xy")', T_SG_GRID, "class = b_index * 23 + a_index"),
    Mutant("sg-huber-delta", "trainer/losses.py", "beta=1.0 / AB_NORM, reduction", "beta=1.0, reduction", T_SG_LOSS,
           "Huber's delta 1 in ab/110 units (110 ab units) instead of 1 ab unit"),
    Mutant("sg-reg-weight", "trainer/losses.py",
           'res["loss"] = self.class_weight * res["loss"] + self.reg_weight * reg',
           'res["loss"] = self.class_weight * res["loss"] + reg', T_SG_LOSS, "--reg-weight ignored beside a class loss"),
    Mutant("sg-reg-pool", "trainer/losses.py", "pred = F.avg_pool2d(ab.float(), ab.shape[-1] // tg.ab.shape[-1])",
           "pred = ab.float()[..., ::ab.shape[-1] // tg.ab.shape[-1], ::ab.shape[-1] // tg.ab.shape[-1]]",
           T_SG_LOSS, "regression against every 4th pixel of the head instead of its 4x4 block means"),
    Mutant("hint-patch-mean", "trainer/hint_sampling.py", "pooled = F.avg_pool2d(ab.float(), s, stride=1)",
           "pooled = F.max_pool2d(ab.float(), s, stride=1)", T_HINTS, "a hint is the patch's maximum, not its mean"),
    Mutant("hint-geometric-p", "trainer/hint_sampling.py", "go = torch.rand(B, M, generator=generator, device=device) < 1 - p",
           "go = torch.rand(B, M, generator=generator, device=device) < p", T_HINTS,
           "one more hint with probability p instead of 1 - p"),
    Mutant("hint-position-sd", "trainer/hint_sampling.py", "z * span[..., None] / 4", "z * span[..., None] / 2",
           T_HINTS, "hint positions spread twice as wide as the reference's"),
    Mutant("hint-colour-ab", "colorfast/hints.py", "return float(lab[1]), float(lab[2])",
           "return float(lab[0]), float(lab[1])", T_HINT_FILE, "a #rrggbb hint's (L, a) taken for its (a, b)"),
    # ---- metrics ------------------------------------------------------------------------------------------
    Mutant("psnr-range", "trainer/metrics.py", "peak_signal_noise_ratio(gt_rgb, pred_rgb, data_range=255)",
           "peak_signal_noise_ratio(gt_rgb, pred_rgb, data_range=1)", T_METRICS, "PSNR with data_range 1"),
    Mutant("ssim-window-11", "trainer/metrics.py", "win = min(7, *gt_rgb.shape[:2])", "win = min(11, *gt_rgb.shape[:2])",
           T_METRICS, "SSIM with an 11 px window instead of 7"),
    Mutant("ssim-range", "trainer/metrics.py", "channel_axis=-1, data_range=255,", "channel_axis=-1, data_range=1,",
           T_METRICS, "SSIM with data_range 1"),
    Mutant("auc-threshold", "trainer/metrics.py", "AUC_MAX_THRESHOLD = 150.0", "AUC_MAX_THRESHOLD = 100.0",
           T_METRICS, "AuC swept over 0..100 instead of 0..150"),
    Mutant("rebalanced-auc-prob", "trainer/metrics.py", "self.inv_prob = 1.0 / np.maximum(prob, floor)",
           "self.inv_prob = np.maximum(prob, floor)", T_METRICS, "rebalanced AuC weighted by p instead of 1/p"),
    Mutant("colourfulness-mean", "trainer/metrics.py", "float(sigma + 0.3 * mu)", "float(sigma + 0.5 * mu)",
           T_METRICS, "colourfulness mean term 0.5 instead of 0.3"),
    Mutant("colourfulness-yb", "trainer/metrics.py", "0.5 * (R + G) - B", "0.5 * (R + B) - G", T_METRICS,
           "yb opponent channel with G and B swapped"),
]


# ---- running ------------------------------------------------------------------------------------------------
def source_files() -> list[str]:
    """Tracked files plus untracked ones git does not ignore, that exist now."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (ROOT / f).is_file() and not f.startswith("artifacts/")})


def copy_tree(dest: Path, files: list[str]) -> Path:
    """The checkout's source files under dest/<name>, and dest/shared pointing at the checkout's ../shared
    (tests find reference files there) when that exists. Returns the copy's root."""
    tree = dest / ROOT.name
    for f in files:
        target = tree / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, target)
    if (ROOT.parent / "shared").is_dir():
        (dest / "shared").symlink_to((ROOT.parent / "shared").resolve())
    return tree


def snippet_count(m: Mutant) -> int:
    path = ROOT / m.file
    return path.read_text().count(m.old) if path.is_file() else 0


def run_tests(tree: Path, tests: tuple[str, ...], cache: Path) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1", "NUMBA_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rfE", *tests]
    try:
        p = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {TIMEOUT_S} s"
    return p.returncode, p.stdout + p.stderr


def first_failure(output: str) -> str | None:
    """The first 'FAILED node' or 'ERROR node' of pytest's short summary, as the node id."""
    m = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.M)
    return m.group(1) if m else None


def run_mutant(m: Mutant, files: list[str]) -> tuple[str, str, float]:
    """(status, detail, seconds): killed (first failing test) | survived | snippet-missing | error."""
    t0 = time.perf_counter()
    n = snippet_count(m)
    if n != 1:
        return "snippet-missing", f"found {n} times in {m.file} (the list must follow the code)", 0.0
    with tempfile.TemporaryDirectory(prefix=f"mutant-{m.id}-") as tmp:
        tree = copy_tree(Path(tmp), files)
        path = tree / m.file
        path.write_text(path.read_text().replace(m.old, m.new, 1))
        rc, out = run_tests(tree, m.tests, Path(tmp) / "numba")
    secs = time.perf_counter() - t0
    failed = first_failure(out)
    if rc == 0:
        return "survived", "every selected test passed", secs
    if rc == 1 and failed:
        return "killed", failed, secs
    if rc == 5:
        return "error", "the selection collected no tests", secs
    tail = " | ".join(out.strip().splitlines()[-3:])[:200]
    return ("killed" if failed else "error"), (failed or f"pytest exit {rc}: {tail}"), secs


def baseline(selections: list[tuple[str, ...]], files: list[str], jobs: int) -> list[str]:
    """Run each distinct selection on the unmutated copy; returns the problems (a failing or empty selection)."""
    with tempfile.TemporaryDirectory(prefix="mutant-baseline-") as tmp:
        tree = copy_tree(Path(tmp), files)
        with ThreadPoolExecutor(jobs) as pool:
            results = list(pool.map(lambda s: (s, run_tests(tree, s, Path(tmp) / f"numba{hash(s)}")), selections))
    return [f"{' '.join(s)}: exit {rc}, {first_failure(out) or out.strip().splitlines()[-1:]}"
            for s, (rc, out) in results if rc != 0]


def table(rows: list[tuple[Mutant, str, str, float]]) -> str:
    lines = ["| mutant | file | bug | result | by / why | s |", "|---|---|---|---|---|---|"]
    for m, status, detail, secs in rows:
        lines.append(f"| {m.id} | {m.file} | {m.what} | {status} | `{detail}` | {secs:.0f} |")
    counts = {s: sum(r[1] == s for r in rows) for s in ("killed", "survived", "snippet-missing", "error")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    return "\n".join(lines) + f"\n\n{len(rows)} mutants: {summary}.\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated mutant ids")
    ap.add_argument("--list", action="store_true", help="list the mutants and whether each snippet is found")
    ap.add_argument("--jobs", type=int, default=1, help="mutants tested at once (default 1)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run of the selections on the unmutated tree")
    args = ap.parse_args(argv)

    ids = [m.id for m in MUTANTS]
    assert len(set(ids)) == len(ids), "duplicate mutant ids"
    assert not any(EXCLUDED_TEST in t for m in MUTANTS for t in m.tests), f"{EXCLUDED_TEST} is never a selection"
    chosen = MUTANTS
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(wanted) - set(ids))
        if unknown:
            print(f"unknown mutant ids: {', '.join(unknown)} (see --list)", file=sys.stderr)
            return 2
        chosen = [m for m in MUTANTS if m.id in wanted]
    if args.list:
        for m in chosen:
            n = snippet_count(m)
            print(f"{m.id:28s} {m.file:26s} {'ok' if n == 1 else f'SNIPPET FOUND {n} TIMES':22s} {m.what}")
        return 0 if all(snippet_count(m) == 1 for m in chosen) else 1

    files = source_files()
    t0 = time.perf_counter()
    if not args.no_baseline:
        selections = list(dict.fromkeys(m.tests for m in chosen))
        print(f"baseline: {len(selections)} test selections on the unmutated tree ...", flush=True)
        problems = baseline(selections, files, max(1, args.jobs))
        if problems:
            print("these selections fail without any mutant; fix them first:\n  " + "\n  ".join(problems),
                  file=sys.stderr)
            return 2
        print(f"baseline passed in {time.perf_counter() - t0:.0f} s", flush=True)

    rows = []

    def one(m: Mutant):
        status, detail, secs = run_mutant(m, files)
        print(f"[{len(rows) + 1}/{len(chosen)}] {m.id}: {status} ({detail}) {secs:.0f} s", flush=True)
        rows.append((m, status, detail, secs))

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        list(pool.map(one, chosen))
    rows.sort(key=lambda r: ids.index(r[0].id))
    report = table(rows)
    print("\n" + report + f"\ntotal {time.perf_counter() - t0:.0f} s, --jobs {args.jobs}")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    tmp = REPORT.with_suffix(".md.tmp")                      # written whole, then renamed over the old report
    tmp.write_text(f"# Mutants ({time.strftime('%Y-%m-%d %H:%M')})\n\nmake mutants (tools/mutants.py)\n\n{report}")
    os.replace(tmp, REPORT)
    return 0 if all(r[1] == "killed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
