"""The README documents what the tool has: every manifest key of the schema, every command and run flag."""

from __future__ import annotations

import re

from snapbatch.cli.main import COMMANDS, _parser
from snapbatch.cli.output import Out
from snapbatch.manifest.load import schema
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def _reference() -> str:
    start = README.index("## The manifest (version 1)")
    return README[start : README.index("\n## ", start + 5)]


def test_every_schema_key_is_in_the_manifest_reference() -> None:
    """Top-level keys, API parameters, job keys, sprite and UserData fields of the schema all appear in the
    README's manifest reference, and the reference names no key the schema lacks."""
    doc = schema()
    defs = doc["$defs"]
    keys = set(doc["properties"]) | set(defs["params"]["properties"]) | set(defs["job"]["properties"])
    keys |= set(defs["sprite"]["properties"]) | set(defs["userdata"]["properties"])
    keys |= set(defs["userdata"]["properties"]["MessageCallback"]["properties"]) | {"file", "column"}
    reference = _reference()
    missing = sorted(k for k in keys if f"`{k}" not in reference)
    assert not missing, f"not in the README's manifest reference: {missing}"
    tables = re.findall(r"^\| `([A-Za-z_]+)`", reference, flags=re.M)
    assert set(tables) <= keys | {"VideoId", "ReferenceId"}, set(tables) - keys


def test_every_command_and_run_flag_is_documented() -> None:
    """Each command appears as `snapbatch COMMAND` and each of run's flags appears in the README."""
    import io

    for command in COMMANDS:
        assert f"snapbatch {command}" in README, command
    parser = _parser(Out(io.StringIO(), io.StringIO()))
    sub = next(a for a in parser._actions if a.dest == "command")
    run = sub.choices["run"]  # type: ignore[index]
    flags = [o for action in run._actions for o in action.option_strings if o.startswith("--") and o != "--help"]
    missing = [f for f in flags if f not in README]
    assert not missing, f"run flags missing from the README: {missing}"


# the Debian packages the tests use (redis-server, chromium, promtool), installed when one is missing
DEBIAN_PACKAGES = (
    "(command -v redis-server && command -v chromium && command -v promtool) >/dev/null "
    "|| (apt-get update && apt-get install -y redis-server chromium prometheus)"
)


def test_readme_commands_for_a_fresh_machine() -> None:
    """The two fresh-machine commands are there: install+example on the emulator, install+tests (redis-server,
    chromium and promtool included)."""
    assert "pip install -e . && snapbatch run jobs.example.yaml --emulator" in README
    assert re.search(
        r"^" + re.escape(DEBIAN_PACKAGES) + r" && pip install -e '\.\[test\]' && pytest$",
        README,
        flags=re.M,
    )


def test_ci_installs_what_the_tests_need() -> None:
    """.ci/run installs redis-server, chromium and promtool when missing, as the README's test command does."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert DEBIAN_PACKAGES in ci.splitlines()
