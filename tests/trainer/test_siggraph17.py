"""The SIGGRAPH17 network: published key layout, shapes of both heads, and hints reaching the output."""
import torch

from live_networks import calibrate_batchnorm, real_l
from trainer.models import MODELS, count_params, create_model
from trainer.siggraph17 import SIGGRAPH17Net, grid_centers

# (key, weight shape) of a few layers of the published siggraph17-df00044c.pth
PUBLISHED = [("model1.0", (64, 4, 3, 3)), ("model1.4", (64,)), ("model3.6", (256,)), ("model5.0", (512, 512, 3, 3)),
             ("model8up.0", (512, 256, 4, 4)), ("model3short8.0", (256, 256, 3, 3)), ("model8.1", (256, 256, 3, 3)),
             ("model8.5", (256,)), ("model9.3", (128,)), ("model1short10.0", (128, 64, 3, 3)),
             ("model10.1", (128, 128, 3, 3)), ("model_class.0", (529, 256, 1, 1)), ("model_out.0", (2, 128, 1, 1))]


def test_siggraph17_is_registered_with_the_published_layout():
    assert {"siggraph17", "siggraph17-tiny"} <= set(MODELS)
    net = create_model("siggraph17", 529, grid_centers())
    assert isinstance(net, SIGGRAPH17Net) and net.guided and net.head == "classes"
    assert abs(count_params(net) - 34.2e6) < 0.3e6, count_params(net)
    sd = net.state_dict()
    for key, shape in PUBLISHED:
        assert tuple(sd[f"{key}.weight"].shape) == shape, key
    assert create_model("siggraph17", 2).head == "ab"


def test_grid_centres_are_the_references_class_order():
    c = grid_centers()
    assert c.shape == (529, 2)
    # colorization-pytorch: class q -> a = (q // 23) * 10 - 110, b = (q % 23) * 10 - 110
    q = torch.arange(529)
    torch.testing.assert_close(c, torch.stack([(q // 23) * 10.0 - 110, (q % 23) * 10.0 - 110], 1))


def test_forward_at_64_with_and_without_hints():
    torch.manual_seed(0)
    net = calibrate_batchnorm(create_model("siggraph17", 529, grid_centers()))
    L = real_l(64)[:2]
    with torch.no_grad():
        logits, ab = net(L)
        assert logits.shape == (2, 529, 16, 16) and ab.shape == (2, 2, 64, 64)
        assert ab.abs().max() <= 1.0                                   # tanh: ab / 110
        hint_ab = torch.zeros(2, 2, 64, 64)
        mask = torch.zeros(2, 1, 64, 64)
        hint_ab[:, :, 30:34, 30:34] = torch.tensor([60.0, -40.0])[:, None, None]
        mask[:, :, 30:34, 30:34] = 1
        logits_h, ab_h = net(L, hint_ab, mask)
        # no hints == explicit empty hints; a hint changes the output
        torch.testing.assert_close(net(L, torch.zeros_like(hint_ab), torch.zeros_like(mask))[1], ab)
        assert (ab_h - ab).abs().max() > 1e-3 and (logits_h - logits).abs().max() > 1e-3


def test_tiny_variant_runs_on_odd_multiples_of_8():
    net = create_model("siggraph17-tiny", 20, torch.zeros(20, 2)).eval()
    assert count_params(net) < 1e6
    with torch.no_grad():
        logits, ab = net(torch.rand(1, 1, 40, 56) * 100)
    assert logits.shape == (1, 20, 10, 14) and ab.shape == (1, 2, 40, 56)
