"""The loss study end to end, at 2 steps per loss: preprocess the sample, train 3 losses, evaluate, compare."""
import json

from colorfast.evaluate import GRAY
from colorfast.study import StudyConfig, run


def test_study_runs_end_to_end_and_reports_every_loss(tmp_path):
    cfg = StudyConfig(out=str(tmp_path), steps=2, crop=64)
    report = run(cfg)
    text = report.read_text()
    for s in ("| l2 |", "| ce |", "| focal |", "| gray (ab = 0) |", "Held out (4 photos", "CE is **"):
        assert s in text, s
    study = json.loads((tmp_path / "study.json").read_text())
    assert sorted(study["heldout_keys"]) == ["astronaut.png", "hubble_deep_field.jpg", "logo.png", "rocket.jpg"]
    assert all(study["heldout"][k]["images"] == 4 and study["train"][k]["images"] == 7 for k in study["heldout"])
    assert len(list((tmp_path / "compare").glob("*.png"))) == 4 and (tmp_path / "compare" / "index.html").exists()
    # the default variants: ce without the data init and ce with the old mean reduction, each its own run and row,
    # trained with the same budget
    runs = {k: json.loads((tmp_path / "runs" / k / "config.json").read_text()) for k in ("ce", "ce-init-off", "ce-mean")}
    assert (runs["ce"]["data_init"], runs["ce-init-off"]["data_init"]) == ("lsuv", "off")
    assert (runs["ce"]["loss_reduction"], runs["ce-mean"]["loss_reduction"]) == ("reference", "mean")
    assert runs["ce"]["loss"] == runs["ce-init-off"]["loss"] == "ce" and runs["ce-init-off"]["steps"] == 2
    assert set(study["heldout"]) == {GRAY, "l2", "ce", "focal", "ce-init-off", "ce-mean"} and "| ce-mean |" in text
    # fit beside generalisation: every figure on the training samples too, logit spread for class heads only
    assert "| run | rebal. AuC % train | rebal. AuC % test | CE train | CE test |" in text
    for where in (study["heldout"], study["train"]):
        assert where["l2"]["logit_spread"] is None and where[GRAY]["logit_spread"] is None
        assert all(where[k]["logit_spread"] > 0 for k in ("ce", "focal", "ce-init-off", "ce-mean"))
    # the data init changes the start: the first-steps view compares ce with and without it
    assert set(study["early"]) == {"ce", "ce-init-off", "ce-mean"} and study["early"]["ce"]["val_step"] == 2
    assert study["early"]["ce"]["ce"] != study["early"]["ce-init-off"]["ce"]
    assert "## The first 2 steps" in text and (tmp_path / "curves_early.png").stat().st_size > 10_000
    # a second run reuses the finished shards and runs instead of training again
    logs = {k: (tmp_path / "runs" / k / "log.jsonl").stat().st_mtime_ns for k in ("l2", "ce", "focal", "ce-init-off")}
    run(cfg)
    assert logs == {k: (tmp_path / "runs" / k / "log.jsonl").stat().st_mtime_ns for k in logs}
    # the same 2-step study was recorded beside docs/results.md: a change of what the study computes shows here
    import importlib.util
    from pathlib import Path
    tool = Path(__file__).parents[2] / "tools" / "results_check.py"
    spec = importlib.util.spec_from_file_location("results_check", tool)
    rc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rc)
    diff = rc.compare_fingerprint(study["heldout"])
    assert not diff, f"the study's figures changed, docs/results.md is stale ({rc.RERUN}):\n" + "\n".join(diff)


def test_study_on_any_shards_with_several_test_folders(tmp_path):
    from click.testing import CliRunner
    from cli import cli
    from trainer.synthetic import write_synthetic_shards
    train = write_synthetic_shards(tmp_path / "objects", n=16, size=64, test_every=4, seed=2)
    scenes = write_synthetic_shards(tmp_path / "scenes", n=5, size=64, seed=3)        # no test split: all of it
    out = tmp_path / "study"
    res = CliRunner().invoke(cli, ["study", "--train", str(train), "--test", str(train), "--test", str(scenes),
                                   "--losses", "l2,focal-exact", "--steps", "2", "--batch-size", "4", "--crop", "48",
                                   "--variant", "l2-noflip:loss=l2,flip=false,lr=3e-4", "--train-eval", "3",
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
    # a variant of any fit option: its own run, its options in its config.json, a row in every table
    variant = json.loads((out / "runs" / "l2-noflip" / "config.json").read_text())
    assert (variant["loss"], variant["flip"], variant["lr"], variant["steps"]) == ("l2", False, 3e-4, 2)
    assert set(study["tests"]["scenes"]) == {GRAY, "l2", "focal-exact", "l2-noflip"}
    assert "| l2-noflip | loss=l2, flip=False, lr=0.0003 |" in text
    assert "--variant l2-noflip:loss=l2,flip=false,lr=3e-4 --train-eval 3" in text
    assert set(study["early"]) == {"l2", "l2-noflip"}
    assert study["tests"]["scenes"]["focal-exact"]["logit_spread"] > 0 and study["train"]["l2"]["logit_spread"] is None
    # the training figures are the first --train-eval training samples
    assert all(row["images"] == 3 for row in study["train"].values())
    for args, message in ((["--variant", "x:lr=fast"], "lr=fast: not a float"),
                          (["--variant", "x:colour=1"], "'colour' is not a fit option"),
                          (["--variant", "x:steps=9"], "steps is the same for every run"),
                          (["--variant", "l2:flip=false"], "'l2' is already a run"),
                          (["--variant", "x:data_init=kmeans"], "--data-init must be lsuv or off"),
                          (["--variant", "noflip"], "expected NAME:key=value")):
        bad = CliRunner().invoke(cli, ["study", "--train", str(train), "--out", str(out), *args])
        assert bad.exit_code == 1 and message in bad.output and "Traceback" not in bad.output, bad.output
    bad = CliRunner().invoke(cli, ["study", "--train", str(train), "--losses", "l2,hinge", "--out", str(out)])
    assert bad.exit_code == 1 and "unknown ['hinge']" in bad.output
