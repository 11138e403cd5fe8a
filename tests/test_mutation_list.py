"""The mutation check's list (tests/tools/mutation.py) against today's code: every planted bug's original text
is found exactly once and every test named to catch it exists, so the list cannot drift from the code. The
mutations themselves are not run here (minutes); ``python tests/tools/mutation.py`` runs them."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest
from conftest import load_script

TOOLS = Path(__file__).resolve().parent / "tools"


@pytest.fixture(scope="module")
def mutation():
    return load_script(TOOLS / "mutation.py", "mutation_check")


@functools.cache
def _test_names(path: Path) -> set[str]:
    """The test functions a test file defines (parametrized ones by their plain name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test")}


def test_every_mutation_still_applies_to_the_code_and_names_tests_that_exist(mutation):
    assert mutation.find_problems() == []
    assert len(mutation.MUTATIONS) >= 21  # the planted bugs, and ten on the engine's backward passes
    root = TOOLS.parents[1]
    for m in mutation.MUTATIONS:
        assert m.tests and m.breaks, m.id
        for test in m.tests:
            file, _, name = test.partition("::")
            assert file.startswith("tests/test_") and file.endswith(".py"), (m.id, test)
            if name:  # a node id: the function is in the file (a parameter in brackets may follow)
                assert name.split("[")[0] in _test_names(root / file), (m.id, test)


def test_a_list_that_drifted_is_refused_naming_the_mutation(mutation, monkeypatch, tmp_path, capsys):
    """An original text that is gone, or found twice, stops the script before it copies or runs anything."""
    first = mutation.MUTATIONS[0]
    gone = mutation.Mutation("gone", first.file, "no such text in the file", "x", first.tests, "nothing")
    twice = mutation.Mutation("twice", first.file, "\n", "\n\n", first.tests, "nothing")
    monkeypatch.setattr(mutation, "MUTATIONS", [first, gone, twice])
    monkeypatch.setattr(mutation, "copy_checkout", lambda dest: pytest.fail("copied a drifted list"))
    assert mutation.main([]) == 2
    err = capsys.readouterr().err
    assert f"gone: its original text is found 0 times in {first.file}, expected once" in err
    assert "twice: its original text is found" in err and first.id + ":" not in err


def test_the_script_is_not_collected_by_pytest():
    """tests/tools/mutation.py is a tool, not a test file: pytest's default pattern test_*.py skips it."""
    assert not any(p.name.startswith("test_") or p.name.endswith("_test.py") for p in TOOLS.glob("*.py"))
