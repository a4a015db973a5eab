"""`make mutants` (tools/mutants.py) applies each listed bug by replacing a snippet of the code; a snippet the code
no longer holds silently turns its mutant into "snippet-missing", and the formula it guarded into one no test is
known to see. This keeps the list following the code (moves and rewrites included) in every `make test`."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mutants_module():
    spec = importlib.util.spec_from_file_location("mutants", ROOT / "tools" / "mutants.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutants", module)        # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_mutant_snippet_occurs_exactly_once_in_its_file():
    mutants = _mutants_module()
    counts = {m.id: (ROOT / m.file).read_text(encoding="utf-8").count(m.old) if (ROOT / m.file).exists() else -1
              for m in mutants.MUTANTS}
    assert len(counts) == len(mutants.MUTANTS), "mutant ids must be unique"
    wrong = {k: n for k, n in counts.items() if n != 1}
    assert not wrong, f"snippets found 0 (or several; -1: no such file) times: {wrong}"
