import pytest
import torch

from trainer.decode import annealed_mean, check_temperature, decode
from trainer.models import AB_NORM


def test_temperature_one_is_the_mean_and_small_temperature_the_mode():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 3, 5, generator=g) * 2
    centers = torch.randn(7, 2, generator=g) * 40
    mean = torch.einsum("bqhw,qc->bchw", logits.softmax(1), centers)
    torch.testing.assert_close(annealed_mean(logits, centers, 1.0), mean)
    mode = centers[logits.argmax(1)].permute(0, 3, 1, 2)                # (B, 2, h, w) centre of the top bin
    torch.testing.assert_close(annealed_mean(logits * 10, centers, 0.01), mode, atol=1e-3, rtol=0)
    # the default 0.38 lies between: more saturated than the mean
    assert annealed_mean(logits, centers).norm() > mean.norm()


def test_l2_output_is_scaled_back_and_bad_temperature_refused():
    out = torch.randn(1, 2, 4, 4)
    torch.testing.assert_close(decode(out, None, 0.38), out * AB_NORM)
    with pytest.raises(ValueError, match="temperature"):
        annealed_mean(torch.zeros(1, 3, 1, 1), torch.zeros(3, 2), 0.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e-300, 0.0, -1.0, 1e6, "warm"])
def test_temperatures_that_would_decode_to_nan_or_gray_are_refused_in_one_line(bad):
    with pytest.raises(ValueError, match=r"between 0.01 and 100") as e:
        check_temperature(bad)
    assert "\n" not in str(e.value)


def test_the_bounds_still_decode_to_finite_colours():
    logits = torch.randn(1, 5, 4, 4) * 30
    for t in (0.01, 100.0):
        assert torch.isfinite(annealed_mean(logits, torch.randn(5, 2) * 50, check_temperature(t))).all()
