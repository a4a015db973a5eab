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
    # the same 2-step study was recorded beside docs/results.md: a change of what the study computes shows here
    import importlib.util
    from pathlib import Path
    tool = Path(__file__).parents[2] / "tools" / "results_check.py"
    spec = importlib.util.spec_from_file_location("results_check", tool)
    rc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rc)
    diff = rc.compare_fingerprint(study["heldout"])
    assert not diff, f"the study's figures changed, docs/results.md is stale ({rc.RERUN}):\n" + "\n".join(diff)
    # a second run reuses the finished shards and runs instead of training again
    logs = {k: (tmp_path / "runs" / k / "log.jsonl").stat().st_mtime_ns for k in ("l2", "ce", "focal")}
    run(cfg)
    assert logs == {k: (tmp_path / "runs" / k / "log.jsonl").stat().st_mtime_ns for k in logs}


def test_study_on_any_shards_with_several_test_folders(tmp_path):
    from click.testing import CliRunner
    from cli import cli
    from trainer.synthetic import write_synthetic_shards
    train = write_synthetic_shards(tmp_path / "objects", n=16, size=64, test_every=4, seed=2)
    scenes = write_synthetic_shards(tmp_path / "scenes", n=5, size=64, seed=3)        # no test split: all of it
    out = tmp_path / "study"
    res = CliRunner().invoke(cli, ["study", "--train", str(train), "--test", str(train), "--test", str(scenes),
                                   "--losses", "l2,focal-exact", "--steps", "2", "--batch-size", "4", "--crop", "48",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    study = json.loads((out / "study.json").read_text())
    assert set(study["tests"]) == {"objects", "scenes"}
    assert study["tests"]["objects"][GRAY]["images"] == 4 and study["tests"]["scenes"]["l2"]["images"] == 5
    assert study["tests"]["objects"]["focal-exact"]["ce"] is not None and study["tests"]["scenes"]["l2"]["ce"] is None
    text = (out / "report.md").read_text()
    for s in ("## Test folder `objects`", "## Test folder `scenes`", "| focal-exact |", "| gray (ab = 0) |",
              "panels_scenes.png", "--losses l2,focal-exact"):
        assert s in text, s
    for loss in ("l2", "focal-exact"):
        rows = [json.loads(x) for x in (out / "runs" / loss / "val.jsonl").read_text().splitlines()]
        assert {r["folder"] for r in rows} == {"objects", "scenes"}
    assert (out / "curves.png").stat().st_size > 10_000 and (out / "panels_objects.png").exists()
    bad = CliRunner().invoke(cli, ["study", "--train", str(train), "--losses", "l2,hinge", "--out", str(out)])
    assert bad.exit_code == 1 and "unknown ['hinge']" in bad.output
