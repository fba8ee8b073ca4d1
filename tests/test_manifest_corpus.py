"""The manifest corpus: every valid file loads; every invalid file fails with the located errors it lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapbatch.errors import ManifestError
from snapbatch.manifest.expand import expand
from snapbatch.manifest.load import load_manifest

CORPUS = Path(__file__).parent / "manifests"
VALID = sorted(p for p in (CORPUS / "valid").iterdir() if p.suffix in (".yaml", ".json"))
INVALID = sorted((CORPUS / "invalid").glob("*.yaml"))
ENV = {"HOOK_HOST": "hooks.test"}


def _matches(line: str, pattern: str) -> bool:
    """``pattern`` is a prefix of ``line``, with ' ... ' standing for any text in between."""
    parts = pattern.split(" ... ")
    if not line.startswith(parts[0]):
        return False
    at = len(parts[0])
    for part in parts[1:]:
        found = line.find(part, at)
        if found < 0:
            return False
        at = found + len(part)
    return True


def test_example_is_in_the_valid_corpus() -> None:
    """jobs.example.yaml is always part of the valid set, byte for byte."""
    root = Path(__file__).parent.parent
    assert (CORPUS / "valid" / "jobs.example.yaml").read_bytes() == (root / "jobs.example.yaml").read_bytes()


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_manifest_loads_and_expands(path: Path) -> None:
    """A valid manifest loads without errors and names at least one request."""
    manifest = load_manifest(path, ENV)
    assert list(expand(manifest))


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_manifest_reports_every_listed_problem(path: Path) -> None:
    """Each expected FILE:LINE:COL: WHERE: MESSAGE line is among the reported errors, and nothing else is."""
    expected = [line for line in path.with_suffix(".expect").read_text().splitlines() if line.strip()]
    assert expected, f"{path.name} has no .expect file"
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, {})
    errors = [p.format() for p in caught.value.problems if p.severity == "error"]
    prefixed = []
    for pattern in expected:
        pattern = f"{path}:" + pattern[2:] if pattern.startswith(".:") else f"{path.parent}/{pattern}"
        prefixed.append(pattern)
    for pattern in prefixed:
        assert any(_matches(line, pattern) for line in errors), f"missing: {pattern}\nreported:\n" + "\n".join(errors)
    assert len(errors) == len(expected), "\n".join(errors)


def test_every_invalid_manifest_has_expectations() -> None:
    """No .expect file is orphaned and no invalid manifest is without one."""
    expects = {p.stem for p in (CORPUS / "invalid").glob("*.expect")}
    assert expects == {p.stem for p in INVALID}


def test_yaml11_lookalikes_stay_as_written() -> None:
    """Unquoted 0123, no, 1e5, on, dates and hex in an ID list are sent exactly as written."""
    manifest = load_manifest(CORPUS / "valid" / "yaml11-ids.yaml", {})
    assert manifest.batch == "2026.11"
    assert [r.video for r in expand(manifest)] == ["0123", "no", "1e5", "on", "2026-11-25", "0x1F", "007"]


def test_crlf_bom_comments_in_id_file() -> None:
    """A BOM, CRLF line ends, surrounding spaces, blank lines and # comments do not become IDs."""
    manifest = load_manifest(CORPUS / "valid" / "id-file-crlf.yaml", {})
    assert [r.video for r in expand(manifest)] == ["v-crlf-0001", "v-crlf-0002"]


def test_anchors_aliases_and_merge_keys() -> None:
    """<<: *base merges with own keys winning; an aliased list is the same IDs."""
    manifest = load_manifest(CORPUS / "valid" / "anchors-and-merge.yaml", {})
    by_job = [(r.job, r.template, r.video, r.params) for r in expand(manifest)]
    large = [p for job, t, _, p in by_job if t == "large"]
    assert large[0]["Width"] == "1920" and large[0]["Count"] == "4" and large[0]["Interval"] == "0"
    b = [p for job, _, _, p in by_job if job == "b"]
    assert [p["VideoId"] for p in b] == ["v-0001", "v-0002"]
    assert b[0]["Count"] == "9" and b[0]["Width"] == "320"


def test_env_default_and_literal_escape() -> None:
    """${VAR:-default} takes the default when VAR is unset, the value when set; $${ stays a literal ${."""
    path = CORPUS / "valid" / "env-and-escapes.yaml"
    unset = next(expand(load_manifest(path, {})))
    assert '"CallbackURL":"https://hooks.example.com/vod"' in unset.params["UserData"]
    assert '"costs ${HOME} nothing"' in unset.params["UserData"]
    set_ = next(expand(load_manifest(path, {"SNAPBATCH_TEST_UNSET_HOST": "cb.test"})))
    assert '"CallbackURL":"https://cb.test/vod"' in set_.params["UserData"]
    assert set_.key != unset.key


def test_template_with_snapshot_params_warns() -> None:
    """SnapshotTemplateId with Count is allowed but warned about, at the Count that is ignored."""
    manifest = load_manifest(CORPUS / "valid" / "template-with-params-warns.yaml", {})
    assert len(manifest.warnings) == 1
    warning = manifest.warnings[0]
    assert (warning.line, warning.where) == (10, "jobs[0].params.Count")
    assert "ignores Count" in warning.message


def test_published_schema_is_the_packaged_one_and_valid() -> None:
    """schemas/manifest.schema.json is the schema snapbatch itself uses, and a valid 2020-12 schema."""
    import json

    import jsonschema

    from snapbatch.manifest.load import schema

    published = json.loads((Path(__file__).parent.parent / "schemas" / "manifest.schema.json").read_text())
    assert published == schema()
    jsonschema.Draft202012Validator.check_schema(published)
    assert published["$schema"] == "https://json-schema.org/draft/2020-12/schema"
