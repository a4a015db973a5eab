"""siggraph17-released: the published SIGGRAPH17 layout loads and runs exactly as the reference network does.

reference_forward is richzhang/colorization's SIGGRAPHGenerator.forward (colorizers/siggraph17.py) written out
with torch.nn.functional over the state dict's tensors, not calling our module; its class head is
colorization-pytorch's (model_class on conv8_3). The state dict is published-layout and live
(tests/siggraph17_weights.py): its output depends on L and on the hints, which the test checks first.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from cli import cli
from colorfast import hub
from colorfast.colorizer import load_colorizer
from live_networks import real_l
from pipeline.images import load_rgb, rgb_to_lab
from released_weights import hash_named, torch_bytes
from siggraph17_weights import released_siggraph17_state_dict
from trainer.siggraph17 import grid_centers


def reference_forward(sd, input_A, input_B=None, mask_B=None):
    """-> (out_class (B, 529, H/4, W/4), ab (B, 2, H, W) in ab units = unnormalize_ab(out_reg))."""
    def conv(x, key, dilation=1):
        w = sd[f"{key}.weight"]
        pad = dilation * (w.shape[-1] // 2)
        return F.conv2d(x, w, sd[f"{key}.bias"], padding=pad, dilation=dilation)

    def bn(x, key):
        return F.batch_norm(x, sd[f"{key}.running_mean"], sd[f"{key}.running_var"], sd[f"{key}.weight"],
                            sd[f"{key}.bias"], False, 0.0, 1e-5)

    def block(x, name, convs, dilation=1, first=0):          # [ReLU,] (conv, ReLU) * convs, BatchNorm
        i = first
        for _ in range(convs):
            x = F.relu(conv(x, f"{name}.{i}", dilation))
            i += 2
        return bn(x, f"{name}.{i}")

    def up(x, key):
        return F.conv_transpose2d(x, sd[f"{key}.weight"], sd[f"{key}.bias"], stride=2, padding=1)

    if input_B is None:
        input_B = torch.cat((input_A * 0, input_A * 0), dim=1)
    if mask_B is None:
        mask_B = input_A * 0
    conv1_2 = block(torch.cat(((input_A - 50.0) / 100.0, input_B / 110.0, mask_B), dim=1), "model1", 2)
    conv2_2 = block(conv1_2[:, :, ::2, ::2], "model2", 2)
    conv3_3 = block(conv2_2[:, :, ::2, ::2], "model3", 3)
    conv4_3 = block(conv3_3[:, :, ::2, ::2], "model4", 3)
    conv5_3 = block(conv4_3, "model5", 3, dilation=2)
    conv6_3 = block(conv5_3, "model6", 3, dilation=2)
    conv7_3 = block(conv6_3, "model7", 3)
    conv8_up = up(conv7_3, "model8up.0") + conv(conv3_3, "model3short8.0")
    conv8_3 = block(F.relu(conv8_up), "model8", 2, first=1)
    conv9_up = up(conv8_3, "model9up.0") + conv(conv2_2, "model2short9.0")
    conv9_3 = block(F.relu(conv9_up), "model9", 1, first=1)
    conv10_up = up(conv9_3, "model10up.0") + conv(conv1_2, "model1short10.0")
    conv10_2 = F.leaky_relu(conv(F.relu(conv10_up), "model10.1"), 0.2)
    out_reg = torch.tanh(conv(conv10_2, "model_out.0"))
    return conv(conv8_3, "model_class.0"), out_reg * 110.0


def _hint(n, side, x, y, ab, half=2):
    hint_ab, mask = torch.zeros(n, 2, side, side), torch.zeros(n, 1, side, side)
    hint_ab[:, :, y - half:y + half + 1, x - half:x + half + 1] = torch.tensor(ab, dtype=torch.float32)[:, None, None]
    mask[:, :, y - half:y + half + 1, x - half:x + half + 1] = 1
    return hint_ab, mask


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """(state dict, file) of the full-size network in the published layout, no hand-wired hint route."""
    sd = released_siggraph17_state_dict("siggraph17", hint_path=False)
    path = tmp_path_factory.mktemp("sg17") / "siggraph17.pth"
    torch.save(sd, path)
    return sd, path


def test_the_published_address_and_hash_are_the_reference_projects():
    entry = hub.NAMED["siggraph17-released"]
    assert entry.url == "https://colorizers.s3.us-east-2.amazonaws.com/siggraph17-df00044c.pth"
    assert hub.expected_prefix(entry.url) == ("siggraph17-df00044c.pth", "df00044c")
    assert entry.url_env == "COLORFAST_SIGGRAPH17_RELEASED_URL"


def test_ours_equals_the_reference_forward_with_and_without_hints(published):
    sd, path = published
    col = load_colorizer(path)
    assert col.guided and col.released and col.default_temperature is None and col.upsample == "bilinear"
    torch.testing.assert_close(col.centers, grid_centers())
    L = real_l(64)
    hints = _hint(4, 64, 40, 20, (60.0, -40.0))
    with torch.no_grad():
        ref_cls, ref_ab = reference_forward(sd, L)
        _, ref_flat = reference_forward(sd, torch.full_like(L, 50.0))
        _, ref_hinted = reference_forward(sd, L, *hints)
    # the fixture is live: L matters, and a hint changes the colours near it far more than far from it
    assert (ref_ab - ref_flat).abs().max() > 5
    moved = (ref_hinted - ref_ab).abs()
    assert moved[..., 16:25, 36:45].mean() > 1.0 and moved[..., 16:25, 36:45].mean() > 4 * moved[..., 48:, :16].mean()

    assert (col.predict_ab(L) - ref_ab).abs().max() < 1e-3
    assert (col.predict_ab(L, hints=hints) - ref_hinted).abs().max() < 1e-3
    one = (hints[0][:1], hints[1][:1])                                    # one set of hints for the whole batch
    assert (col.predict_ab(L, hints=one) - ref_hinted).abs().max() < 1e-3
    assert (col.predict_raw(L) - ref_cls).abs().max() < 1e-3
    # suggest: the class head's distribution at a point, with the hints, most likely first
    with torch.no_grad():
        ref_cls_h, _ = reference_forward(sd, L[:1], hints[0][:1], hints[1][:1])
    p = torch.softmax(ref_cls_h[0, :, 5, 10], 0)
    top = torch.topk(p, 3)
    got = col.suggest(L[:1], x=41, y=22, hints=(hints[0][:1], hints[1][:1]), k=3)
    assert [(a, b) for a, b, _ in got] == [tuple(grid_centers()[i].tolist()) for i in top.indices]
    np.testing.assert_allclose([q for *_, q in got], top.values.numpy(), atol=1e-5)


def test_a_photo_side_that_is_no_multiple_of_8_is_padded_and_cropped(published):
    sd, path = published
    col = load_colorizer(path)
    L = real_l(64)[:1, :, :60, :52]
    ab = col.predict_ab(L)
    assert ab.shape == (1, 2, 60, 52)
    hint_ab, mask = (t[..., :60, :52] for t in _hint(1, 64, 40, 20, (60.0, -40.0)))
    hinted = col.predict_ab(L, hints=(hint_ab, mask))
    with torch.no_grad():
        _, ref = reference_forward(sd, F.pad(L, (0, 4, 0, 4), mode="reflect"))
        _, ref_hinted = reference_forward(sd, F.pad(L, (0, 4, 0, 4), mode="reflect"), F.pad(hint_ab, (0, 4, 0, 4)),
                                          F.pad(mask, (0, 4, 0, 4)))
    assert (ab - ref[..., :60, :52]).abs().max() < 1e-3
    assert (hinted - ref_hinted[..., :60, :52]).abs().max() < 1e-3     # the hint planes padded with "no hint"


def test_a_class_head_of_the_wrong_size_is_refused_in_one_line(tmp_path):
    sd = released_siggraph17_state_dict()
    sd["model_class.0.weight"] = sd["model_class.0.weight"][:313]
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(Exception, match=r"bad.pth: model_class.0.weight has shape \(313, 32, 1, 1\), expected"):
        load_colorizer(tmp_path / "bad.pth")
