"""Manifest -> the requests it names, in a deterministic order, each with a stable key.

Pure apart from reading ID files. Order: jobs as written, each job's IDs as listed, each ID's templates
as listed. A key is a hash of the batch name and the exact wire parameters (ID included), so the same
request made by two jobs has one key and is sent once, and renaming the batch starts afresh.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from snapbatch.errors import ManifestError, Problem
from snapbatch.manifest.ids import IdEntry, open_regular, read_ids
from snapbatch.models import KEY_CHARS, Job, Manifest, Request

__all__ = [
    "KEY_CHARS",
    "Listings",
    "Survey",
    "duplicate_candidates",
    "expand",
    "fingerprint",
    "search_jobs",
    "survey",
]

# A search job's name -> its frozen list of VideoIds, streamed. A search job missing here names no requests.
Listings = Mapping[str, Callable[[], Iterator[str]]]

MAX_DUPLICATE_WARNINGS = 20


def _variant_hashers(batch: str, job: Job) -> list[hashlib.blake2b]:
    hashers = []
    for variant in job.variants:
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps([batch, variant.params], separators=(",", ":"), ensure_ascii=False).encode())
        hashers.append(h)
    return hashers


class _Item(NamedTuple):
    request: Request
    fingerprint: int
    file: str
    line: int | None
    col: int | None
    where: str


def search_jobs(manifest: Manifest) -> list[Job]:
    """The jobs whose videos come from SearchMedia."""
    return [job for job in manifest.jobs if job.ids.search is not None]


def _entries(job: Job, listings: Listings | None) -> Iterator[IdEntry]:
    if job.ids.search is None:
        yield from read_ids(job.ids)
        return
    listed = (listings or {}).get(job.name)
    if listed is None:
        return
    loc = job.ids.loc
    for video in listed():
        yield IdEntry(video, loc.file, loc.line, loc.col)


def _items(manifest: Manifest, listings: Listings | None = None) -> Iterator[_Item]:
    # IDs were checked when the manifest was loaded; this path runs once per request, so it stays lean.
    for job in manifest.jobs:
        kind = job.ids.kind
        where = job.ids.loc.where
        variants = [
            (v.template, dict(v.params), h)
            for v, h in zip(job.variants, _variant_hashers(manifest.batch, job), strict=True)
        ]
        for entry in _entries(job, listings):
            if entry.error is not None:  # the file changed since it was checked
                raise ManifestError([Problem(entry.file, entry.line, entry.col, where, entry.error)])
            video = entry.value
            tail = f"\x00{kind}\x00{video}".encode()
            for template, base, hasher in variants:
                h = hasher.copy()
                h.update(tail)
                digest = h.digest()
                request = Request(digest.hex()[:KEY_CHARS], job.name, template, kind, video, {kind: video, **base})
                yield _Item(request, int.from_bytes(digest[:8], "big"), entry.file, entry.line, entry.col, where)


_BLOOM_BITS = 1 << 25  # 4 MiB: a million requests give about 4,000 false candidates


def duplicate_candidates(manifest: Manifest, listings: Listings | None = None) -> set[int]:
    """Fingerprints that may occur more than once: every true duplicate plus a few false ones.

    A fixed-size Bloom filter (two bit positions a request) keeps memory flat however many requests there
    are; the exact check then only has to remember the candidates.
    """
    bits = bytearray(_BLOOM_BITS // 8)
    mask = _BLOOM_BITS - 1
    candidates: set[int] = set()
    for item in _items(manifest, listings):
        fp = item.fingerprint
        present = True
        for shift in (0, 32):
            pos = ((fp >> shift) * 0x9E3779B1) & mask
            byte, bit = pos >> 3, 1 << (pos & 7)
            if not bits[byte] & bit:
                present = False
                bits[byte] |= bit
        if present:
            candidates.add(fp)
    return candidates


def expand(
    manifest: Manifest,
    *,
    candidates: set[int] | None = None,
    fold_duplicates: bool = True,
    listings: Listings | None = None,
) -> Iterator[Request]:
    """Every request, duplicates folded (the first occurrence stays) unless asked otherwise. Search jobs
    name requests only through ``listings``."""
    if fold_duplicates and candidates is None:
        candidates = duplicate_candidates(manifest, listings)
    seen: set[int] = set()
    for item in _items(manifest, listings):
        if candidates and item.fingerprint in candidates:
            if item.fingerprint in seen:
                continue
            seen.add(item.fingerprint)
        yield item.request


@dataclass
class Survey:
    """What a manifest expands to, counted without keeping the requests."""

    total: int = 0  # before folding duplicates
    unique: int = 0
    per_variant: Counter[tuple[str, str | None]] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)  # by job
    warnings: list[Problem] = field(default_factory=list)
    candidates: set[int] = field(default_factory=set)


def survey(manifest: Manifest, listings: Listings | None = None) -> Survey:
    """Count requests per job and template and find duplicates, each duplicate a warning (the first few)."""
    result = Survey(candidates=duplicate_candidates(manifest, listings))
    seen: set[int] = set()
    for item in _items(manifest, listings):
        result.total += 1
        request = item.request
        if item.fingerprint in result.candidates:
            if item.fingerprint in seen:
                result.duplicates[request.job] += 1
                if sum(result.duplicates.values()) <= MAX_DUPLICATE_WARNINGS:
                    result.warnings.append(
                        Problem(
                            item.file,
                            item.line,
                            item.col,
                            item.where,
                            f"{request.id_kind} {request.video} with these parameters is already requested earlier; "
                            "it is sent once",
                            "warning",
                        )
                    )
                continue
            seen.add(item.fingerprint)
        result.unique += 1
        result.per_variant[(request.job, request.template)] += 1
    extra = sum(result.duplicates.values()) - MAX_DUPLICATE_WARNINGS
    if extra > 0:
        result.warnings.append(
            Problem(str(manifest.path), None, None, "", f"{extra} more duplicate requests folded", "warning")
        )
    return result


def fingerprint(manifest: Manifest) -> str:
    """Changes whenever the requests the manifest names could change: its jobs, parameters and ID files."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            [
                manifest.batch,
                [
                    [
                        j.name,
                        j.ids.kind,
                        [list(v.params) for v in j.variants],
                        [v.template for v in j.variants],
                        [i for i, _ in j.ids.inline or ()],
                        j.ids.column,
                        *([j.ids.search.match, j.ids.search.sort_by] if j.ids.search is not None else []),
                    ]
                    for j in manifest.jobs
                ],
            ],
            ensure_ascii=False,
        ).encode()
    )
    for job in manifest.jobs:
        if job.ids.file is not None:
            with open_regular(job.ids.file) as handle:  # never a FIFO or a device that would not end
                while chunk := handle.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()
