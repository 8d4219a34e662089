"""CI covers what the project declares: every supported Python, the README's test command."""

from __future__ import annotations

import ast
import re
import tomllib

from conftest import ROOT


def _noxfile_constant(name: str):
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"noxfile.py defines no {name}")


def test_the_smoke_runs_cover_every_supported_python_but_the_default():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        classifier.rsplit(" :: ", 1)[1]
        for classifier in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", classifier)
    }
    default = project["requires-python"].split(",")[0].removeprefix(">=")
    assert default == "3.11" and default in declared
    assert set(_noxfile_constant("OTHER_PYTHONS")) == declared - {default}
    for path in _noxfile_constant("SMOKE_TESTS"):
        assert (ROOT / path).is_file(), path


def test_ci_ends_with_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text()
    command = "python3 -m pytest -q -n 2"
    assert f"```bash\n{command}\n```" in readme
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert lines[-1] == command
    assert lines[0] == "#!/usr/bin/env bash" and "set -euo pipefail" in lines
