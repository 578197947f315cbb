"""The README documents every setting the services read, as the code defines it."""

from __future__ import annotations

from deploy.settings_doc import render
from tests.harness import ROOT


def test_readme_settings_tables_match_the_code():
    readme = (ROOT / "README.md").read_text()
    begin, end = "<!-- settings:begin -->\n", "\n<!-- settings:end -->"
    assert begin in readme and end in readme
    documented = readme.split(begin, 1)[1].split(end, 1)[0].strip()
    assert documented == render().strip(), "README settings are stale: run `python -m deploy.settings_doc`"


def test_readme_names_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "./handoff up" in readme and "./handoff test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./handoff test" in ci
