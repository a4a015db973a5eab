"""The loss study end to end, at 2 steps per loss: preprocess the sample, train 3 losses, evaluate, compare."""
import json

from inference.evaluate import GRAY
from inference.study import StudyConfig, run


def test_study_runs_end_to_end_and_reports_every_loss(tmp_path):
    cfg = StudyConfig(out=str(tmp_path), steps=2, crop=64)
    report = run(cfg)
    text = report.read_text()
    for s in ("| l2 |", "| ce |", "| focal |", "| gray (ab = 0) |", "Held out (4 photos", "CE is **"):
        assert s in text, s
    study = json.loads((tmp_path / "study.json").read_text())
    assert sorted(study["heldout_keys"]) == ["astronaut.png", "hubble_deep_field.jpg", "logo.png", "rocket.jpg"]
    assert set(study["heldout"]) == {GRAY, "l2", "ce", "focal"}
    assert all(study["heldout"][k]["images"] == 4 and study["train"][k]["images"] == 7 for k in study["heldout"])
    assert len(list((tmp_path / "compare").glob("*.png"))) == 4 and (tmp_path / "compare" / "index.html").exists()
    # a second run reuses the finished shards and runs instead of training again
    logs = {k: (tmp_path / "runs" / k / "log.jsonl").stat().st_mtime_ns for k in ("l2", "ce", "focal")}
    run(cfg)
    assert logs == {k: (tmp_path / "runs" / k / "log.jsonl").stat().st_mtime_ns for k in logs}
