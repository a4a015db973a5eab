"""docs/results.md stays true to `cli.py study` (tools/results_check.py): its tables and the figures in its
sentences are those of the recorded study (docs/results.json), which was run with today's defaults. The
end-to-end study test compares a 2-step study with the fingerprint recorded beside them."""
import importlib.util
import json
from dataclasses import asdict
from pathlib import Path

from colorfast.study import StudyConfig

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("results_check", ROOT / "tools" / "results_check.py")
results_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results_check)
RERUN = results_check.RERUN


def recorded():
    return json.loads(results_check.DATA.read_text())


def test_results_doc_tables_and_sentences_are_the_recorded_figures():
    problems = results_check.check(results_check.DOC.read_text(), recorded())
    assert not problems, "\n".join(problems)


def test_a_changed_figure_in_the_doc_is_caught():
    doc = results_check.DOC.read_text()
    figures = recorded()
    ce = f"{figures['heldout']['ce']['colourfulness']:.1f}"
    assert ce in doc.split("**What it shows.**")[1]
    known = {abs(x) for x in results_check.figures_at(figures, 1)}
    wrong = next(f"{float(ce) + d / 10:.1f}" for d in range(1, 1000) if round(float(ce) + d / 10, 1) not in known)
    head, prose = doc.split("**What it shows.**")
    stale = head + "**What it shows.**" + prose.replace(ce, wrong, 1)
    assert any("none of the study's figures" in p for p in results_check.check(stale, figures))
    table = doc.replace(f"{figures['train']['l2']['auc']:.2f}", "1.23", 1)
    assert any("train table differs" in p for p in results_check.check(table, figures))


def test_recorded_study_used_todays_defaults():
    where = lambda c: {k: v for k, v in c.items() if k != "out"}          # noqa: E731  (where, not what)
    assert where(recorded()["config"]) == where(json.loads(json.dumps(asdict(StudyConfig())))), \
        f"StudyConfig's defaults changed since docs/results.md was written: {RERUN}"


def test_the_fit_and_early_tables_are_checked_where_the_doc_has_them():
    figures = recorded()
    made = results_check.tables(figures)
    assert "| run | rebal. AuC % train | rebal. AuC % test |" in made["fit"] and "| ce | " in made["early"]
    doc = results_check.DOC.read_text()
    assert all(f"<!-- study-table: {s} -->" in doc for s in ("fit", "early"))        # the page shows both
    assert not results_check.check(doc, figures)
    first_early = made["early"].splitlines()[2]
    stale = doc.replace(first_early, first_early.replace("|", "| 1 |", 1))
    assert any("the early table differs" in p for p in results_check.check(stale, figures))
    first = made["fit"].splitlines()[2]
    assert any("the fit table differs" in p
               for p in results_check.check(doc.replace(first, first.replace("|", "| 1 |", 1)), figures))
    assert any("recorded no figures" in p for p in results_check.check(doc, {**figures, "early": {}}))
