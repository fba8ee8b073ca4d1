"""Expansion: counts, key uniqueness and stability, merging order, duplicate folding."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from snapbatch.manifest.expand import expand, survey
from snapbatch.manifest.load import load_manifest

ids = st.lists(st.from_regex(r"[A-Za-z0-9_-]{6,12}", fullmatch=True), min_size=1, max_size=6, unique=True)
template_names = st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=3, unique=True)


@st.composite
def manifests(draw: st.DrawFn) -> dict[str, Any]:
    templates = {
        name: {"Count": i + 1, "Width": 100 + i, "UserData": {"Extend": {"t": name, "n": i}}}
        for i, name in enumerate("abcd")
    }
    jobs = []
    for index in range(draw(st.integers(1, 4))):
        job: dict[str, Any] = {
            "name": f"job{index}",
            "videos" if draw(st.booleans()) else "reference_ids": draw(ids),
            "params": {"Interval": index, "UserData": {"MessageCallback": {"CallbackURL": f"https://h{index}.test/"}}},
        }
        names = draw(template_names)
        if names:
            job["template"] = names
        jobs.append(job)
    return {
        "version": 1,
        "batch": draw(st.from_regex(r"[a-z]{1,10}", fullmatch=True)),
        "defaults": {"Height": 720, "UserData": {"Extend": {"base": 1}}},
        "templates": templates,
        "sprites": {"s": {"Columns": 3, "Lines": 2}},
        "jobs": jobs,
    }


def _shuffled(value: Any, rnd: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _shuffled(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rnd) for v in value]
    return value


def _load(data: dict[str, Any]) -> list[Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.json"
        path.write_text(json.dumps(data))
        return list(expand(load_manifest(path, {})))


@settings(max_examples=60, deadline=None)
@given(manifests())
def test_count_is_product_of_axes_and_keys_unique(data: dict[str, Any]) -> None:
    """Requests = sum over jobs of IDs x templates (at least one); every key distinct."""
    requests = _load(data)
    expected = sum(
        len(j.get("videos") or j.get("reference_ids")) * max(1, len(j.get("template", []))) for j in data["jobs"]
    )
    assert len(requests) == expected
    assert len({r.key for r in requests}) == expected


@settings(max_examples=60, deadline=None)
@given(manifests(), st.randoms(use_true_random=False))
def test_keys_stable_when_mappings_are_reordered(data: dict[str, Any], rnd: random.Random) -> None:
    """Reordering mapping keys anywhere changes neither the keys, nor their order, nor the wire parameters. Slow: 60
    generated manifests, each expanded twice."""
    before = _load(data)
    after = _load(_shuffled(data, rnd))
    assert [r.key for r in after] == [r.key for r in before]
    assert [r.params for r in after] == [r.params for r in before]


@settings(max_examples=30, deadline=None)
@given(manifests())
def test_another_batch_name_gives_other_keys(data: dict[str, Any]) -> None:
    """The batch name is part of every key."""
    first = {r.key for r in _load(data)}
    renamed = dict(data, batch=data["batch"] + "x")
    assert first.isdisjoint({r.key for r in _load(renamed)})


@settings(max_examples=40, deadline=None)
@given(ids, st.integers(1, 3))
def test_same_request_from_two_jobs_is_sent_once(videos: list[str], copies: int) -> None:
    """Jobs producing identical requests (same video, same final parameters) fold into one each."""
    jobs = [{"name": f"j{i}", "videos": videos, "params": {"Count": 2}} for i in range(copies)]
    data = {"version": 1, "batch": "dup", "jobs": jobs}
    requests = _load(data)
    assert [r.video for r in requests] == videos
    assert all(r.job == "j0" for r in requests)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.json"
        path.write_text(json.dumps(data))
        found = survey(load_manifest(path, {}))
    assert (found.total, found.unique) == (len(videos) * copies, len(videos))
    assert len(found.warnings) == min(len(videos) * (copies - 1), 20)


def test_merge_order_defaults_template_sprite_params() -> None:
    """defaults < template < sprite < job params; mappings merge key by key, lists replace."""
    data = {
        "version": 1,
        "batch": "m",
        "defaults": {
            "Count": 1,
            "SpecifiedOffsetTimes": [1, 2],
            "UserData": {"Extend": {"a": 1, "b": 1}},
            "SpriteSnapshotConfig": {"Columns": 1, "Lines": 1},
        },
        "templates": {"t": {"Count": 2, "Width": 300, "UserData": {"Extend": {"b": 2}}}},
        "sprites": {"s": {"Columns": 5}},
        "jobs": [
            {
                "name": "j",
                "videos": ["v-0001"],
                "template": "t",
                "sprite": "s",
                "params": {"Width": "400", "SpecifiedOffsetTimes": [7], "SpriteSnapshotConfig": {"Color": "White"}},
            }
        ],
    }
    (request,) = _load(data)
    assert request.params == {
        "VideoId": "v-0001",
        "Count": "2",
        "SpecifiedOffsetTimes": "[7]",
        "SpriteSnapshotConfig": '{"Color":"White","Columns":5,"Lines":1}',
        "UserData": '{"Extend":{"a":1,"b":2}}',
        "Width": "400",
    }
