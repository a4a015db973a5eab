"""Architecture and the released ECCV16 PyTorch key layout (richzhang/colorization, colorizers/eccv16.py)."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from colorfast.colorizer import load_colorizer
from live_networks import calibrate_batchnorm, real_l, responds_to_l
from trainer.models import MODELS, count_params, create_model

REF = Path(__file__).resolve().parents[3] / "shared" / "reference" / "pts_in_hull.npy"
# conv layers of the released file: (key, weight shape); BatchNorms sit at model1.4, model2.4, model3.6, ..., model7.6
RELEASED_CONVS = [("model1.0", (64, 1, 3, 3)), ("model1.2", (64, 64, 3, 3)), ("model2.0", (128, 64, 3, 3)),
                  ("model2.2", (128, 128, 3, 3)), ("model3.0", (256, 128, 3, 3)), ("model3.4", (256, 256, 3, 3)),
                  ("model4.0", (512, 256, 3, 3)), ("model5.2", (512, 512, 3, 3)), ("model7.4", (512, 512, 3, 3)),
                  ("model8.0", (512, 256, 4, 4)), ("model8.4", (256, 256, 3, 3)), ("model8.6", (313, 256, 1, 1))]
RELEASED_BNS = ["model1.4", "model2.4", "model3.6", "model4.6", "model5.6", "model6.6", "model7.6"]
ECCV16_FAMILY = sorted(n for n in MODELS if not n.startswith("siggraph17"))   # siggraph17: test_siggraph17.py


def test_eccv16_has_the_published_size_and_shapes():
    m = create_model("eccv16", 313)
    assert abs(count_params(m) - 32.2e6) < 0.1e6
    sd = m.state_dict()
    for key, shape in RELEASED_CONVS:
        assert tuple(sd[f"{key}.weight"].shape) == shape, key
    for key in RELEASED_BNS:
        assert f"{key}.running_var" in sd, key


@pytest.mark.parametrize("name", ECCV16_FAMILY)
def test_heads_are_sized_from_the_bins_or_two_for_l2(name):
    L = torch.rand(2, 1, 48, 64) * 100
    centers = torch.zeros(20, 2)
    assert create_model(name, 20, centers)(L).shape == (2, 20, 12, 16)
    assert create_model(name, 2)(L).shape == (2, 2, 12, 16)
    assert count_params(create_model("tiny", 313)) < 1e6


@pytest.mark.parametrize("name", ECCV16_FAMILY)
def test_the_network_reads_l_star_centred_at_50_and_scaled_by_100(name):
    """The released model's input is (L - 50) / 100 of L* in 0..100. The network must respond to L for this
    to be testable (live_networks), and it does once its BatchNorms hold statistics of real photos."""
    torch.manual_seed(0)
    net = calibrate_batchnorm(create_model(name, 2))
    assert responds_to_l(net)
    L = real_l()
    with torch.no_grad():
        x = (L - 50.0) / 100.0
        for b in range(1, 9):
            x = getattr(net, f"model{b}")(x)
        torch.testing.assert_close(net(L), x)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A state dict in the released layout: model1..model8 + model_out (2, 313, 1, 1) = centres / 110."""
    if not REF.exists():
        pytest.skip("../shared/reference/pts_in_hull.npy not present")
    pts = torch.from_numpy(np.load(REF)).float()
    torch.manual_seed(0)
    net = calibrate_batchnorm(create_model("eccv16", 313, torch.zeros(313, 2)))   # BN statistics of real L
    sd = {k: v for k, v in net.state_dict().items() if k != "centers" and not k.endswith("num_batches_tracked")}
    sd["model_out.weight"] = (pts / 110).t().reshape(2, 313, 1, 1).contiguous()
    path = tmp_path_factory.mktemp("released") / "colorization_release_v2.pth"
    torch.save(sd, path)
    return path, sd, pts


def test_released_state_dict_colorizes_through_model_out_with_its_313_bins(released):
    path, sd, pts = released
    col = load_colorizer(path)
    assert col.loss == "ce" and col.prior is None
    torch.testing.assert_close(col.centers, pts)
    # the released forward, written out: layers by key, then softmax -> model_out -> * 110 (before upsampling)
    net = create_model("eccv16", 313, torch.zeros(313, 2))
    net.load_state_dict({**sd, "centers": torch.zeros(313, 2)}, strict=False)
    L = torch.rand(1, 1, 64, 64) * 100
    with torch.no_grad():
        ref = F.conv2d(net.eval()(L).softmax(1), sd["model_out.weight"]) * 110
    torch.testing.assert_close(col.predict_ab(L, temperature=1.0), ref, rtol=1e-4, atol=1e-3)
    assert col.predict_ab(torch.rand(2, 1, 50, 70) * 100).shape == (2, 2, 12, 17)


def test_fit_init_from_released_keeps_its_bins_and_maps_shard_targets(released, shards, tmp_path):
    from trainer.config import FitConfig
    from trainer.loop import fit
    path, sd, pts = released
    run = fit(FitConfig(data=str(shards), out=str(tmp_path / "run"), model="eccv16", init=str(path), crop=32,
                        batch_size=2, steps=1, workers=0))
    col = load_colorizer(run / "last.pt")
    torch.testing.assert_close(col.centers, pts)              # decodes with the released centres, not the shards'
    assert col.model.out_channels == 313
    # the trunk came from the file: one Adam step at lr 3e-5 moves a weight by about lr
    torch.testing.assert_close(col.model.model4[0].weight, sd["model4.0.weight"], atol=1e-4, rtol=0)
