"""Several `snapbatch run` processes on one AccessKey against one emulator enforcing 30/s: sharing the quota."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from snapbatch.emulator import busiest_window
from tests.conftest import CliRunner
from tests.emulated import process, running
from tests.redis_server import redis_server
from tests.test_run import ENV


def _manifests(tmp_path: Path, runs: int, n: int) -> list[Path]:
    paths = []
    for r in range(runs):
        (tmp_path / f"ids{r}.txt").write_text("".join(f"run{r}-{i:04d}\n" for i in range(n)))
        path = tmp_path / f"m{r}.yaml"
        path.write_text(
            f"version: 1\nbatch: b{r}\njobs:\n  - {{name: all, videos: {{file: ids{r}.txt}}, params: {{Count: 1}}}}\n"
        )
        paths.append(path)
    return paths


@pytest.mark.parametrize(("runs", "backend"), [(2, "local"), (3, "local"), (2, "redis"), (3, "redis")])
def test_concurrent_runs_share_the_quota(runs: int, backend: str, tmp_path: Path) -> None:
    """Two or three runs at once on one key, sharing on this host or through a real redis-server: every
    request is accepted exactly once, no second at the server holds more than 30 accepted calls, few calls
    are throttled (not sharing, they throttle each other on most calls), the runs overlap, and
    each says how it paces. Rates and fairness are bench/shared_runners.py's to measure. Slow by nature: 120-180
    calls at the shared 30/s (4-6 s) from processes of their own; fewer would let a run that starts late find the
    others done."""
    n = 60
    with redis_server(tmp_path) if backend == "redis" else _nothing() as server:
        quota = server.url if server is not None else "local"
        with process(tmp_path, "--qps", "30", "--latency-ms", "20", "80") as emu:
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "snapbatch", "run", str(m), "--endpoint", emu.url, "--quota", quota],
                    env={**os.environ, **ENV},
                    cwd=tmp_path,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for m in _manifests(tmp_path, runs, n)
            ]
            errs = [p.communicate()[1] for p in procs]
        calls = emu.calls()
    assert [p.returncode for p in procs] == [0] * runs, errs
    accepted = [c for c in calls if c.get("outcome") == "accepted"]
    ids = sorted(str(c["params"]["VideoId"]) for c in accepted)
    assert ids == sorted(f"run{r}-{i:04d}" for r in range(runs) for i in range(n))
    assert busiest_window([float(c["mono"]) for c in accepted]) <= 30
    # Not sharing, each run believes it owns 30/s and about (runs-1)/runs of all calls are throttled. Sharing,
    # a throttle comes only from arrival jitter beyond the margin, which a loaded 2-core machine can produce
    # now and then: a tenth of the requests is a bound that still tells the two apart without timing luck.
    throttled = sum(1 for c in calls if str(c.get("code", "")).startswith("Throttling"))
    assert throttled <= runs * n // 10, errs
    spans = [
        [float(c["mono"]) for c in accepted if str(c["params"]["VideoId"]).startswith(f"run{r}-")] for r in range(runs)
    ]
    assert max(min(s) for s in spans) < min(max(s) for s in spans)  # they ran at the same time
    word = "on this host" if backend == "local" else "shared through redis://127.0.0.1:"
    assert all(word in err for err in errs), errs


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_unreachable_redis_stops_the_run_with_exit_5(cli: CliRunner, tmp_path: Path) -> None:
    """--quota pointing at a Redis nobody serves: nothing is sent (never an unshared rate), the log says the
    quota cannot be reached and that it retries, the progress line says it is paused, and after
    --quota-wait the run stops with exit 5, its work left pending. Slow by nature: it sits out the 2 s --quota-wait."""
    (tmp_path / "ids.txt").write_text("a\nb\nc\n")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\nbatch: t\njobs:\n  - {name: all, videos: {file: ids.txt}, params: {Count: 1}}\n")
    with running() as emu:
        quota = ["--quota", "redis://127.0.0.1:1/0", "--quota-wait", "2", "--progress-every", "0.1"]
        r = cli("run", str(manifest), "--endpoint", emu.url, *quota, env=ENV)
        assert emu.emulator.calls == []
    assert r.code == 5, r.err
    assert "the shared quota cannot be reached" in r.err and "retrying" in r.err
    assert "paused: waiting for the shared quota" in r.err
    assert "stopped: the shared quota could not be reached" in r.err
    status = cli("status", str(manifest), "--json", env=ENV)
    assert json.loads(status.out)["counts"]["pending"] == 3, status.out


def test_an_unwritable_cache_is_refused_rather_than_pacing_alone(cli: CliRunner, tmp_path: Path) -> None:
    """When the host file cannot be made (XDG_CACHE_HOME is a file), the run refuses with exit 2 and sends
    nothing, instead of pacing alone at the full rate beside runs it cannot see; --quota off runs knowingly."""
    (tmp_path / "ids.txt").write_text("a\nb\n")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\nbatch: t\njobs:\n  - {name: all, videos: {file: ids.txt}, params: {Count: 1}}\n")
    (tmp_path / "not-a-dir").write_text("")
    env = {**ENV, "XDG_CACHE_HOME": str(tmp_path / "not-a-dir")}
    with running() as emu:
        refused = cli("run", str(manifest), "--endpoint", emu.url, env=env)
        assert emu.emulator.calls == []
        alone = cli("run", str(manifest), "--endpoint", emu.url, "--quota", "off", env=env)
    assert refused.code == 2, refused.err
    assert "cannot share the quota with other runs on this host" in refused.err and "--quota off" in refused.err
    assert alone.code == 0, alone.err


def test_quota_from_the_manifest_and_the_environment(cli: CliRunner, tmp_path: Path) -> None:
    """The manifest's `quota` applies when neither SNAPBATCH_QUOTA nor --quota is given, the environment
    wins over it and --quota over both; a password in the URL never shows; a bad value exits 2."""
    (tmp_path / "ids.txt").write_text("a\n")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "version: 1\nbatch: t\nquota: redis://:hunter2@127.0.0.1:1/0\n"
        "jobs:\n  - {name: all, videos: {file: ids.txt}, params: {Count: 1}}\n"
    )
    with running() as emu:
        from_manifest = cli("run", str(manifest), "--endpoint", emu.url, "--quota-wait", "0.5", env=ENV)
        from_env = cli("run", str(manifest), "--endpoint", emu.url, env={**ENV, "SNAPBATCH_QUOTA": "off"})
        bad = cli("run", str(manifest), "--endpoint", emu.url, "--quota", "shared", env=ENV)
    assert from_manifest.code == 5 and "redis://127.0.0.1:1/0" in from_manifest.err
    assert "hunter2" not in from_manifest.err
    assert from_env.code == 0 and "pacing shared" not in from_env.err, from_env.err
    assert bad.code == 2 and "--quota is 'shared': give local" in bad.err
