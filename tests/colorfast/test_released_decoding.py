"""Released weights decode as the reference PyTorch port does; our checkpoints keep T = 0.38 and bicubic.

The reference below is written from richzhang/colorization, colorizers/eccv16.py (ECCVGenerator.forward:
model1..model8 on (L - 50) / 100, softmax over classes, the bias-free 1x1 conv model_out, bilinear
upsampling by 4, times ab_norm = 110) and util.py (postprocess_tens: bilinear resize of ab to the original
size). Its widths are parameters here so that a small random state dict can stand in for the 129 MB file.
"""
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from cli import cli
from colorfast.photos import predict_ab_full
from colorfast.loader import load_colorizer
from live_networks import real_l, responds_to_l
from trainer.decode import decode


class ReferenceECCV16(nn.Module):
    """ECCVGenerator of richzhang/colorization (colorizers/eccv16.py), layer for layer, widths as arguments."""

    def __init__(self, widths=(64, 128, 256, 512, 512, 512, 512, 256), q=313):
        super().__init__()
        c1, c2, c3, c4, c5, c6, c7, c8 = widths

        def block(c_in, c, n, stride_last=1, dil=1):
            layers = []
            for i in range(n):
                layers += [nn.Conv2d(c_in if i == 0 else c, c, 3, stride=stride_last if i == n - 1 else 1,
                                     padding=dil, dilation=dil, bias=True), nn.ReLU(True)]
            return layers + [nn.BatchNorm2d(c)]

        self.model1 = nn.Sequential(*block(1, c1, 2, 2))
        self.model2 = nn.Sequential(*block(c1, c2, 2, 2))
        self.model3 = nn.Sequential(*block(c2, c3, 3, 2))
        self.model4 = nn.Sequential(*block(c3, c4, 3))
        self.model5 = nn.Sequential(*block(c4, c5, 3, dil=2))
        self.model6 = nn.Sequential(*block(c5, c6, 3, dil=2))
        self.model7 = nn.Sequential(*block(c6, c7, 3))
        self.model8 = nn.Sequential(nn.ConvTranspose2d(c7, c8, 4, stride=2, padding=1, bias=True), nn.ReLU(True),
                                    nn.Conv2d(c8, c8, 3, padding=1, bias=True), nn.ReLU(True),
                                    nn.Conv2d(c8, c8, 3, padding=1, bias=True), nn.ReLU(True),
                                    nn.Conv2d(c8, q, 1, bias=True))
        self.softmax = nn.Softmax(dim=1)
        self.model_out = nn.Conv2d(q, 2, kernel_size=1, padding=0, dilation=1, stride=1, bias=False)
        self.upsample4 = nn.Upsample(scale_factor=4, mode="bilinear")

    def quarter(self, input_l):
        """out_reg * ab_norm: the reference's ab before upsample4, at 1/4 resolution."""
        x = (input_l - 50.0) / 100.0
        for b in range(1, 9):
            x = getattr(self, f"model{b}")(x)
        return self.model_out(self.softmax(x)) * 110.0

    def forward(self, input_l):
        return self.upsample4(self.quarter(input_l))        # = unnormalize_ab(upsample4(out_reg))


TINY = (8, 16, 32, 64, 64, 64, 64, 32)


@pytest.fixture(scope="module")
def reference(released_file):
    path, sd = released_file
    ref = ReferenceECCV16(TINY, q=sd["model_out.weight"].shape[1])
    ref.load_state_dict(sd, strict=True)                    # the released file's keys, every one of them
    return ref.eval()


def l_image(h, w, seed=0):
    """A smooth lightness field with texture, L* in 0..100."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, h // 8, w // 8, generator=g) * 100
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def test_prediction_equals_the_reference_networks_at_quarter_resolution(released_file, reference):
    col = load_colorizer(released_file[0])
    L = l_image(64, 96)
    with torch.no_grad():
        expected = reference.quarter(L)                     # (1, 2, 16, 24)
    got = col.predict_ab(L)                                 # no temperature given: the released default
    assert col.default_temperature == 1.0 and col.upsample == "bilinear"
    assert expected.abs().max() > 3 and expected.std((2, 3)).min() > 0.5     # not gray, not flat: the test can fail
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-3)
    # the old behaviour (annealing again at 0.38) is a different, more saturated colouring
    assert (col.predict_ab(L, temperature=0.38) - expected).abs().max() > 5


def test_the_fixture_network_sees_its_input_so_the_reference_sees_how_l_enters(released_file, reference):
    """Without calibrated BatchNorm statistics a random network gives the same colours for any L, and the
    reference comparison above would pass with the input normalisation wrong or the input zeroed."""
    col = load_colorizer(released_file[0])
    assert responds_to_l(col.model) and responds_to_l(reference)
    L = real_l()
    got = col.predict_ab(L)
    with torch.no_grad():
        assert (got - reference.quarter(torch.full_like(L, 50.0))).abs().max() > 5      # the input zeroed
        assert (got - reference.quarter(L + 50)).abs().max() > 5                           # L / 100, not (L - 50) / 100
        assert (got - reference.quarter(L / 2.55)).abs().max() > 5                         # L read as 0..255


def test_full_resolution_ab_is_the_references_bilinear_upsampling(released_file, reference):
    col = load_colorizer(released_file[0])
    L = l_image(64, 64, seed=1)
    with torch.no_grad():
        expected = reference(L)[0].numpy().transpose(1, 2, 0)                 # (64, 64, 2)
    got = predict_ab_full(col, L[0, 0].numpy(), size=64)                       # network at 64: 1/4 is 16 -> 64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)


def test_our_checkpoints_keep_the_paper_temperature_and_bicubic(tiny_runs):
    col = load_colorizer(tiny_runs[1]["ce"])
    assert not col.released and col.default_temperature == 0.38 and col.upsample == "bicubic"
    L = l_image(32, 48, seed=2)
    logits = col.model(L)
    torch.testing.assert_close(col.predict_ab(L), decode(logits, col.centers, 0.38), rtol=0, atol=1e-5)
    torch.testing.assert_close(col.predict_ab(L, temperature=0.7), decode(logits, col.centers, 0.7), rtol=0, atol=1e-5)
    l2 = load_colorizer(tiny_runs[1]["l2"])
    assert l2.default_temperature is None and "no temperature" in l2.describe()


def test_temperature_overrides_both_and_the_output_says_which_was_used(released_file, tiny_runs, tmp_path):
    rgb = (np.random.default_rng(3).random((24, 40, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "p.png")

    def colorize(ckpt, *extra):
        res = CliRunner().invoke(cli, ["colorize", str(tmp_path / "p.png"), "--checkpoint", str(ckpt), "--size", "32",
                                       "--out", str(tmp_path / "o"), *extra])
        assert res.exit_code == 0, res.output
        return res.output

    assert "temperature 1 (released weights: plain softmax mean" in colorize(released_file[0])
    assert "bilinear upsampling" in colorize(released_file[0])
    assert "temperature 0.38 (annealed mean" in colorize(tiny_runs[1]["ce"]) and "bicubic" in colorize(tiny_runs[1]["ce"])
    assert "temperature 0.5 (--temperature)" in colorize(released_file[0], "--temperature", "0.5")
    assert "temperature 0.2 (--temperature)" in colorize(tiny_runs[1]["ce"], "--temperature", "0.2")


def test_evaluate_records_each_models_decoding(released_file, tiny_runs, tmp_path):
    import json
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray((np.random.default_rng(4).random((40, 40, 3)) * 255).astype(np.uint8)).save(imgs / "a.png")
    res = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(released_file[0]), "--checkpoint",
                                   str(tiny_runs[1]["ce"]), "--images", str(imgs), "--size", "32",
                                   "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    models = json.loads((tmp_path / "ev" / "metrics.json").read_text())["models"]
    assert models["tiny_released"]["decoding"].startswith("temperature 1 (released")
    assert models["ce"]["decoding"].startswith("temperature 0.38")
    assert "tiny_released: temperature 1" in (tmp_path / "ev" / "metrics.md").read_text()
