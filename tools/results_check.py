"""Keep docs/results.md true to what `cli.py study` produces.

    python tools/results_check.py                         # check docs/results.md against docs/results.json
    python tools/results_check.py artifacts/study/study.json   # ... and against a fresh `make study`
    python tools/results_check.py --write artifacts/study/study.json
        # record a fresh study: docs/results.json (its figures, plus the fingerprint of a 2-step study) and
        # the tables of docs/results.md; then reread the document's sentences (the check lists stale ones)

What is checked, cheaply, so that drift shows:
- every table between `<!-- study-table: SECTION -->` and `<!-- /study-table -->` is exactly
  trainer.metrics.markdown_table of that section of the figures (heldout, train, both required), or, where
  the document has their marker, the study's fit-beside-generalisation table of the held-out folder (fit)
  and its first-steps table (early);
- every decimal number in the "What it shows" section is one of the figures, at the precision written, or
  the difference of two of them;
- (tests/colorfast/test_study.py) docs/results.json's config is StudyConfig's defaults, and a 2-step study,
  which the test suite runs anyway, gives the fingerprint recorded beside the figures: a change of the
  model, losses, data, initialisation or metrics changes it, and the test names this script.
"""
from __future__ import annotations

import json
import re
import sys
import tempfile
from itertools import product
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DOC, DATA = ROOT / "docs" / "results.md", ROOT / "docs" / "results.json"
SECTIONS = ("heldout", "train")
OPTIONAL = ("fit", "early")                      # tables a document may show: checked where it has their marker
TABLE = re.compile(r"<!-- study-table: (\w+) -->\n(.*?)<!-- /study-table -->", re.S)
FINGERPRINT = dict(steps=2, crop=64)             # the study test_study.py runs end to end
FINGERPRINT_KEYS = ("auc", "auc_rebalanced", "colourfulness", "chroma", "l2")


def tables(figures: dict) -> dict:
    from colorfast.study import early_table, fit_table
    from trainer.metrics import markdown_table
    out = {s: markdown_table(figures[s]) for s in SECTIONS}
    out["fit"] = "\n".join(fit_table(figures["train"], figures["heldout"])) + "\n"
    if figures.get("early"):
        out["early"] = "\n".join(early_table(figures["early"])) + "\n"
    return out


def prose_numbers(text: str) -> list[str]:
    part = text.split("**What it shows.**", 1)[-1].split("**Run time.**", 1)[0]
    return re.findall(r"(?<![\w.])[-+]?\d+\.\d+(?![\w.])", part)


def figures_at(figures: dict, decimals: int) -> set:
    vals = [v for s in (*SECTIONS, "early") for row in figures.get(s, {}).values() for v in row.values()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out = {round(v, decimals) for v in vals}
    out |= {round(a - b, decimals) for a, b in product(vals, vals) if abs(a - b) < 1000}
    return out


def check(doc: str, figures: dict) -> list[str]:
    problems = []
    found = dict(TABLE.findall(doc))
    made = tables(figures)
    problems += [f"docs/results.md has a {s} table but the study recorded no figures for it"
                 for s in OPTIONAL if s in found and s not in made]
    for s, table in made.items():
        if s in OPTIONAL and s not in found:
            continue
        if s not in found:
            problems.append(f"docs/results.md has no <!-- study-table: {s} --> table")
        elif found[s].strip() != table.strip():
            problems.append(f"docs/results.md: the {s} table differs from the study's figures")
    cache = {}
    for num in prose_numbers(doc):
        d = len(num.split(".")[1])
        cache.setdefault(d, figures_at(figures, d))
        if round(abs(float(num)), d) not in {abs(x) for x in cache[d]}:
            problems.append(f"docs/results.md, 'What it shows': {num} is none of the study's figures")
    return problems


RERUN = "rerun `make study`, then `python tools/results_check.py --write artifacts/study/study.json`"


def compare_fingerprint(heldout: dict, recorded: dict | None = None) -> list[str]:
    """Differences between a 2-step study's held-out figures and the recorded fingerprint. The tolerances
    cover another CPU's float rounding, not a change of model, loss, data or metric."""
    fp = (recorded or json.loads(DATA.read_text()))["fingerprint"]["heldout"]
    out = []
    for name, row in fp.items():
        for k, v in row.items():
            got = heldout[name][k]
            tol = 2e-4 if k == "l2" else 0.02 + 2e-3 * abs(v)
            if abs(got - v) > tol:
                out.append(f"{name} {k}: {got:.4f}, recorded {v:.4f}")
    return out


def fingerprint(figures_heldout: dict) -> dict:
    return {name: {k: row[k] for k in FINGERPRINT_KEYS} for name, row in figures_heldout.items()}


def write(study_json: Path) -> None:
    from dataclasses import asdict
    from colorfast.study import StudyConfig, run
    study = json.loads(study_json.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        run(StudyConfig(out=tmp, **FINGERPRINT))
        small = json.loads((Path(tmp) / "study.json").read_text())
    data = {"config": study["config"], "heldout_keys": study["heldout_keys"],
            "heldout": study["heldout"], "train": study["train"], "early": study.get("early", {}),
            "fingerprint": {"config": {**asdict(StudyConfig()), **FINGERPRINT},
                            "heldout": fingerprint(small["heldout"])}}
    DATA.write_text(json.dumps(data, indent=1) + "\n")
    doc = DOC.read_text()
    for s, table in tables(data).items():
        doc = re.sub(rf"(<!-- study-table: {s} -->\n).*?(<!-- /study-table -->)",
                     lambda m, t=table: m.group(1) + t + m.group(2), doc, flags=re.S)
    DOC.write_text(doc)
    print(f"wrote {DATA} and the tables of {DOC}; now reread its sentences:")
    for p in check(doc, data):
        print("  " + p)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--write"]:
        write(Path(argv[1]))
        return 0
    doc = DOC.read_text()
    problems = check(doc, json.loads(DATA.read_text()))
    if argv:
        study = json.loads(Path(argv[0]).read_text())
        problems += [f"(fresh study {argv[0]}) {p}" for p in check(doc, study)]
    for p in problems:
        print(p)
    print("ok" if not problems else f"{len(problems)} problem(s): rerun `make study`, then "
          "`python tools/results_check.py --write artifacts/study/study.json` and reread docs/results.md")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
