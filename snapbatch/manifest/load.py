"""A manifest file -> a checked Manifest, or a ManifestError listing every problem with its location.

path -> YAML (located) -> ${VAR} interpolation -> JSON Schema -> semantic checks (references, merged
parameters, IDs) -> Manifest.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from pathlib import Path as FsPath
from typing import Any, NamedTuple

import jsonschema

from snapbatch.errors import ManifestError, Problem, UsageError, echo
from snapbatch.manifest import located
from snapbatch.manifest.ids import check_id, open_regular, read_ids
from snapbatch.manifest.located import Document, format_path
from snapbatch.manifest.match import MatchError, check_sort_by, parse
from snapbatch.models import DEFAULT_QPS, EXTEND_TAG, KEY_CHARS, IdSource, Job, Loc, Manifest, Search, Variant
from snapbatch.vod.endpoint import check_url, url_problem

__all__ = ["MAX_API_INT", "MAX_ID_PROBLEMS", "load_manifest", "merge", "schema", "to_wire"]

MAX_ID_PROBLEMS = 20  # per ID source; a file of a million bad lines says so in one line, not a million
EXTEND_MAX_BYTES = 512
MAX_API_INT = 2**31 - 1  # the API's integer fields are 32-bit; the schema says the same
_WHOLE = ("Count", "Interval", "SpecifiedOffsetTime", "Width", "Height")
_WHOLE_RANGE: dict[str, tuple[int, int]] = {
    "Count": (1, MAX_API_INT),
    "Interval": (0, MAX_API_INT),
    "SpecifiedOffsetTime": (0, MAX_API_INT),
    "Width": (8, 4096),
    "Height": (8, 4096),
}
_IGNORED_WITH_TEMPLATE = (
    "Count",
    "Interval",
    "SpecifiedOffsetTime",
    "SpecifiedOffsetTimes",
    "Width",
    "Height",
    "SpriteSnapshotConfig",
)
_JSON_TEXT = ("SpecifiedOffsetTimes", "SpriteSnapshotConfig", "UserData")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@cache
def schema() -> dict[str, Any]:
    """The published manifest schema, as shipped inside the package."""
    text = resources.files("snapbatch").joinpath("schemas/manifest.schema.json").read_text("utf-8")
    result: dict[str, Any] = json.loads(text)
    return result


def load_manifest(path: FsPath, env: Mapping[str, str], *, check_ids: bool = True) -> Manifest:
    """Load and check ``path``; with ``check_ids`` every ID (ID files included) is read and checked."""
    try:
        with open_regular(path) as handle:
            data = handle.read(located.MAX_BYTES + 1)  # more than the limit is refused by located.load
    except OSError as exc:
        raise ManifestError(
            [Problem(str(path), None, None, "", f"cannot read the manifest: {exc.strerror or exc}")]
        ) from None
    except ValueError as exc:
        raise ManifestError([Problem(str(path), None, None, "", f"the manifest {exc}; name a YAML file")]) from None
    doc = located.load(data, str(path))
    checker = _Checker(doc, path, env)
    return checker.run(check_ids)


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key, recursively; anything else in ``over`` replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def to_wire(params: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """API parameters as the strings that go on the wire, sorted by name."""
    wire = {}
    for name, value in params.items():
        if name in _WHOLE:
            wire[name] = str(int(value))
        elif name in _JSON_TEXT:
            wire[name] = _compact(value)
        else:
            wire[name] = str(value)
    return tuple(sorted(wire.items()))


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _number(value: Any) -> str:
    return repr(value) if len(repr(value)) <= 30 else f"{value:.3g}"


def _close(word: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


class _JobIds(NamedTuple):
    name: str
    ids: IdSource


class _Checker:
    def __init__(self, doc: Document, path: FsPath, env: Mapping[str, str]) -> None:
        self.doc = doc
        self.path = path
        self.env = env
        self.problems: list[Problem] = []
        self.id_sources: list[_JobIds] = []  # every job's IDs, also of jobs with other errors

    # -- locating -------------------------------------------------------------------------------------

    def loc(self, path: located.Path, *, key: bool = False) -> Loc:
        line, col = self.doc.mark(path, key=key)
        return Loc(self.doc.file, line, col, format_path(path))

    def error(self, path: located.Path, message: str, *, key: bool = False) -> None:
        self.problems.append(self.loc(path, key=key).problem(message))

    def warn(self, path: located.Path, message: str) -> None:
        self.problems.append(self.loc(path).problem(message, "warning"))

    # -- stages ---------------------------------------------------------------------------------------

    def run(self, check_ids: bool) -> Manifest:
        value = self.interpolate(self.doc.value, ())
        if not self.errors():
            self.check_schema(value)
            self.check_all_whole_text(value)
        if self.errors():
            raise ManifestError(self.problems)
        manifest = self.build(value)
        if check_ids:  # with the other errors, so one validate shows every problem
            self.check_ids()
        if self.errors():
            raise ManifestError(self.problems)
        warnings = tuple(p for p in self.problems if p.severity == "warning")
        return Manifest(
            manifest.path,
            manifest.batch,
            manifest.region,
            manifest.endpoint,
            manifest.qps,
            manifest.jobs,
            warnings,
            manifest.quota,
        )

    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def interpolate(self, value: Any, path: located.Path) -> Any:
        if isinstance(value, dict):
            return {k: self.interpolate(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.interpolate(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            return self.substitute(value, path)
        return value

    def substitute(self, text: str, path: located.Path) -> str:
        """${VAR}, ${VAR:-default} (the default itself may hold ${...}, expanded only when used) and $${ for a
        literal ${; every mistake is an error at ``path``, so nothing is ever sent with a ${ left in it."""
        out, _ = self._expand(text, 0, path, nested=False, used=True)
        return out

    def _expand(self, text: str, at: int, path: located.Path, *, nested: bool, used: bool) -> tuple[str, int]:
        """Expand from ``at`` to the end of ``text`` (or, when ``nested``, to the } closing a default); return
        the text and where it stopped. ``used``: whether the result is used (unset variables in a default
        that is not taken are no error)."""
        out: list[str] = []
        i = at
        while i < len(text):
            if text.startswith("$${", i):
                out.append("${")
                i += 3
            elif text.startswith("${", i):
                value, i = self._variable(text, i + 2, path, used)
                out.append(value)
            elif nested and text[i] == "}":
                return "".join(out), i + 1
            else:
                out.append(text[i])
                i += 1
        if nested:
            self.error(path, f"unterminated ${{ in {echo(text)}; close it with }} or write $${{ for a literal ${{")
        return "".join(out), i

    def _variable(self, text: str, at: int, path: located.Path, used: bool) -> tuple[str, int]:
        name_match = _VAR_NAME.match(text, at)
        name = name_match.group(0) if name_match else ""
        i = at + len(name)
        if text.startswith(":-", i) and name:
            taken = used and not self.env.get(name)
            default, i = self._expand(text, i + 2, path, nested=True, used=taken)
            return (default if taken else self.env.get(name, "")), i
        if text.startswith("}", i) and name:
            found = self.env.get(name)
            if found is None and used:
                self.error(path, f"environment variable {name} is not set; set it or write ${{{name}:-default}}")
            return found or "", i + 1
        close = text.find("}", at)
        if close < 0:
            self.error(path, "unterminated ${ ; close it with } or write $${ for a literal ${")
            return "", len(text)
        self.error(path, f"${{{echo(text[at:close])[1:-1]}}} is not a variable; write ${{NAME}} or ${{NAME:-default}}")
        return "", close + 1

    def check_schema(self, value: Any) -> None:
        validator = jsonschema.Draft202012Validator(schema())
        for err in sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path]):
            path = tuple(err.absolute_path)
            if err.validator == "additionalProperties" and err.validator_value is False:
                known = list(err.schema.get("properties", {}))
                for key in err.instance:
                    if key not in known:
                        self.error((*path, key), self.unknown_key(key, known), key=True)
            elif err.validator == "propertyNames":
                self.error(path, f"{echo(err.instance)} is not a usable name: use 1-64 of A-Z a-z 0-9 _ . -")
            else:
                self.error(path, self.schema_message(err, path))

    def unknown_key(self, key: str, known: list[str]) -> str:
        if key == "VideoId":
            return "VideoId is not a parameter here: list the videos under the job's `videos`"
        if key == "search":
            return "search works under `videos` only: SearchMedia finds videos by VideoId"
        if key == "ReferenceId":
            return "ReferenceId is not a parameter here: list the videos' custom IDs under `reference_ids`"
        hint = _close(key, known)
        if not hint and known:
            hint = f"; known keys: {', '.join(known)}"
        return f"unknown key {echo(key)}{hint}"

    def schema_message(self, err: jsonschema.ValidationError, path: located.Path) -> str:
        kind = err.validator
        field = str(path[-1]) if path else ""
        inst: Any = err.instance
        limit: Any = err.validator_value
        if kind == "required":
            missing = str(err.message).split("'")[1]
            return f"missing required key {missing!r}"
        if kind == "type":
            return self.type_message(err.validator_value, inst, path)
        if kind == "const":
            return f"must be {err.validator_value!r}; this snapbatch reads manifest version 1"
        if kind == "enum":
            return f"must be one of {', '.join(map(str, limit))}, not {echo(inst)}"
        if kind == "pattern":
            if field == "batch" or field == "name":
                return f"{echo(inst)} must be 1-64 characters of A-Z a-z 0-9 _ . -"
            if field in _WHOLE:
                return f"must be a whole number, not {echo(inst)}"
            if field in ("CallbackURL", "endpoint"):
                return f"{echo(inst)} must be an http:// or https:// URL"
            if field == "region":
                return f"{echo(inst)} is not a region ID such as cn-shanghai"
            if field == "quota":
                return f"{echo(inst)} is not local, off or a redis://HOST:PORT/DB URL"
            return f"{echo(inst)} does not match {err.validator_value}"
        if kind in ("minimum", "exclusiveMinimum"):
            word = "at least" if kind == "minimum" else "more than"
            return f"must be {word} {err.validator_value}, not {_number(inst)}"
        if kind in ("maximum", "exclusiveMaximum"):
            word = "at most" if kind == "maximum" else "less than"
            return f"must be {word} {err.validator_value}, not {_number(inst)}"
        if kind == "maxLength":
            return f"must be at most {err.validator_value} characters, not {len(inst)}"
        if kind == "minItems":
            return f"must list at least {err.validator_value} item(s)"
        if kind == "maxItems":
            return f"lists {len(inst)} items; at most {err.validator_value} are allowed"
        if kind == "minLength":
            return "must not be empty"
        if kind == "not" and field == "videos":
            return "takes {search: MATCH} or {file: PATH}, not both; split it into two jobs"
        return str(err.message)

    def type_message(self, expected: Any, inst: Any, path: located.Path) -> str:
        names = {
            "string": "text",
            "integer": "a whole number",
            "number": "a number",
            "object": "a mapping",
            "array": "a list",
            "boolean": "true or false",
        }
        wanted = [expected] if isinstance(expected, str) else list(expected)
        if set(wanted) == {"integer", "string"}:
            wanted = ["integer"]
        if len(path) >= 3 and path[-2] in ("videos", "reference_ids") and isinstance(path[-1], int):
            return "an ID must be text; this one is empty (write it in quotes if `~` or `null` is really the ID)"
        if "array" in wanted and "object" in wanted and path and path[-1] == "videos":
            return "must be a list of IDs, {file: PATH}, {file: PATH, column: NAME} or {search: MATCH}"
        if "string" in wanted and "object" in wanted and path and path[-1] == "search":
            return "must be a Match expression, or {match: MATCH, sort_by: ...}"
        if "array" in wanted and "object" in wanted:
            return "must be a list of IDs, {file: PATH} or {file: PATH, column: NAME}"
        if inst is None:
            got = "empty"
        elif isinstance(inst, bool):
            got = f"the boolean {str(inst).lower()}"
        elif isinstance(inst, (int, float)):
            got = f"the number {_number(inst)}"
        elif isinstance(inst, dict):
            got = "a mapping"
        elif isinstance(inst, list):
            got = "a list"
        else:
            got = f"the text {echo(inst)}"
        message = f"must be {' or '.join(names.get(w, w) for w in wanted)}, not {got}"
        raw = self.doc.raw.get(path)
        if "string" in wanted and raw is not None:
            message += f'; write it in quotes ("{echo(raw)[1:-1]}") to keep it as written'
        return message

    # -- semantics ------------------------------------------------------------------------------------

    def check_all_whole_text(self, top: Any) -> None:
        """Ranges of whole numbers written as text, which JSON Schema cannot check; shape not yet trusted."""
        if not isinstance(top, dict):
            return
        fragments: list[tuple[located.Path, Any]] = [(("defaults",), top.get("defaults"))]
        if isinstance(top.get("templates"), dict):
            fragments += [(("templates", k), v) for k, v in top["templates"].items()]
        if isinstance(top.get("jobs"), list):
            fragments += [
                (("jobs", i, "params"), j.get("params")) for i, j in enumerate(top["jobs"]) if isinstance(j, dict)
            ]
        for path, fragment in fragments:
            if isinstance(fragment, dict):
                self.check_whole_text(fragment, path)

    def build(self, top: dict[str, Any]) -> Manifest:
        defaults = top.get("defaults", {})
        templates = top.get("templates", {})
        sprites = top.get("sprites", {})
        endpoint = top.get("endpoint")
        if endpoint is not None:
            self.check_endpoint(endpoint)
        self.check_callback_urls(top)
        jobs: list[Job] = []
        seen_names: dict[str, int] = {}
        for index, job in enumerate(top["jobs"]):
            base = ("jobs", index)
            name = job["name"]
            if name in seen_names:
                self.error(
                    (*base, "name"),
                    f"job name {echo(name)} is already used by jobs[{seen_names[name]}]; names must be unique",
                )
            seen_names.setdefault(name, index)
            built = self.build_job(job, base, defaults, templates, sprites)
            if built is not None:
                jobs.append(built)
        return Manifest(
            self.path,
            top["batch"],
            top.get("region"),
            endpoint,
            float(top.get("qps", DEFAULT_QPS)),
            tuple(jobs),
            quota=top.get("quota"),
        )

    def check_callback_urls(self, top: dict[str, Any]) -> None:
        """Every CallbackURL is a URL the service can call: a host, a valid port, no spaces or control characters."""
        fragments: list[tuple[located.Path, Any]] = [(("defaults",), top.get("defaults"))]
        fragments += [(("templates", k), v) for k, v in top.get("templates", {}).items()]
        fragments += [(("jobs", i, "params"), j.get("params")) for i, j in enumerate(top["jobs"])]
        for path, params in fragments:
            url = ((params or {}).get("UserData") or {}).get("MessageCallback", {}).get("CallbackURL")
            if isinstance(url, str):
                problem = url_problem(url)
                if problem is not None:
                    self.error(
                        (*path, "UserData", "MessageCallback", "CallbackURL"), f"CallbackURL {echo(url)} {problem}"
                    )

    def check_endpoint(self, endpoint: str) -> None:
        try:
            check_url(endpoint)
        except UsageError as exc:
            self.error(("endpoint",), str(exc))

    def check_whole_text(self, params: Mapping[str, Any], path: located.Path) -> None:
        for name, (low, high) in _WHOLE_RANGE.items():
            value = params.get(name)
            if not isinstance(value, str) or not value.isdigit():
                continue
            number = int(value) if len(value) < 12 else 10**12
            if number < low or number > high:
                span = (
                    f"{low}-{high}" if high != MAX_API_INT else f"at least {low}" if number < low else f"at most {high}"
                )
                self.error((*path, name), f"must be {span}, not {echo(value)}")

    def build_job(
        self,
        job: dict[str, Any],
        base: located.Path,
        defaults: dict[str, Any],
        templates: dict[str, Any],
        sprites: dict[str, Any],
    ) -> Job | None:
        ok = True
        sources = [k for k in ("videos", "reference_ids") if k in job]
        if len(sources) == 1:
            ids = self.id_source(job, base, sources[0])
            self.id_sources.append(_JobIds(job["name"], ids))
        else:
            ok = False
            if sources:
                self.error(base, "a job takes `videos` or `reference_ids`, not both; split it into two jobs")
            else:
                self.error(base, "a job needs `videos` (VOD VideoIds) or `reference_ids` (the videos' custom IDs)")
        template_spec = job.get("template")
        names = [template_spec] if isinstance(template_spec, str) else list(template_spec or [])
        for i, tname in enumerate(names):
            tpath = (*base, "template") if isinstance(template_spec, str) else (*base, "template", i)
            if tname not in templates:
                ok = False
                known = f" (defined: {', '.join(templates)})" if templates else " (no `templates` are defined)"
                self.error(tpath, f"unknown template {echo(tname)}{_close(tname, templates) or known}")
            elif tname in names[:i]:
                ok = False
                self.error(tpath, f"template {echo(tname)} is listed twice")
        sprite_name = job.get("sprite")
        if sprite_name is not None and sprite_name not in sprites:
            ok = False
            known = f" (defined: {', '.join(sprites)})" if sprites else " (no `sprites` are defined)"
            self.error((*base, "sprite"), f"unknown sprite {echo(sprite_name)}{_close(sprite_name, sprites) or known}")
        if not ok:
            return None
        variants = []
        for tname in names or [None]:
            layers: list[tuple[located.Path, Mapping[str, Any]]] = [(("defaults",), defaults)]
            if tname is not None:
                layers.append((("templates", tname), templates[tname]))
            if sprite_name is not None:
                layers.append(((*base, "sprite"), {"SpriteSnapshotConfig": sprites[sprite_name]}))
            layers.append(((*base, "params"), job.get("params", {})))
            params: dict[str, Any] = {}
            for _, layer in layers:
                params = merge(params, layer)
            if self.check_final(params, layers, base, tname):
                variants.append(Variant(tname, to_wire(params)))
        return Job(job["name"], self.loc(base), ids, tuple(variants))

    def check_final(
        self,
        params: dict[str, Any],
        layers: list[tuple[located.Path, Mapping[str, Any]]],
        base: located.Path,
        template: str | None,
    ) -> bool:
        label = f" (template {template!r})" if template else ""

        def origin(*keys: str) -> located.Path:
            for path, layer in reversed(layers):
                node: Any = layer
                for key in keys:
                    node = node.get(key) if isinstance(node, Mapping) else None
                if node is not None:
                    return (*path, *keys) if path[-1] != "sprite" else path
            return base

        good = True
        if "SnapshotTemplateId" in params:
            ignored = [k for k in _IGNORED_WITH_TEMPLATE if k in params]
            if ignored:
                self.warn(
                    origin(ignored[0]),
                    f"SnapshotTemplateId is set{label}, so the service ignores "
                    f"{', '.join(ignored)}; drop them or drop the template ID",
                )
        elif "Count" not in params and "Interval" not in params:
            good = False
            self.error(base, f"this job's requests{label} need SnapshotTemplateId, or Count and/or Interval")
        extend = params.get("UserData", {}).get("Extend")
        if extend is not None:
            # a mapping also carries snapbatch's request key (models.tagged), which counts against the budget
            tag = "" if isinstance(extend, str) else f" with snapbatch's request key ({EXTEND_TAG})"
            sent = extend if isinstance(extend, str) else _compact({**extend, EXTEND_TAG: "0" * KEY_CHARS})
            size = len(sent.encode())
            if size > EXTEND_MAX_BYTES:
                good = False
                self.error(
                    origin("UserData", "Extend"),
                    f"UserData.Extend is {size} bytes once serialized{tag}"
                    f"{label}; the service allows at most {EXTEND_MAX_BYTES}",
                )
        return good

    def id_source(self, job: dict[str, Any], base: located.Path, field: str) -> IdSource:
        kind = "VideoId" if field == "videos" else "ReferenceId"
        spec = job[field]
        path = (*base, field)
        if isinstance(spec, list):
            inline = []
            for i, item in enumerate(spec):
                raw = self.doc.raw.get((*path, i))
                value = self.substitute(raw, (*path, i)) if raw is not None and "${" in raw else raw
                inline.append((value if value is not None else str(item), self.loc((*path, i))))
            return IdSource(kind, self.loc(path), inline=tuple(inline))
        if "search" in spec:
            return self.search_source(spec["search"], path)
        file = self.path.parent / spec["file"]
        column_loc = self.loc((*path, "column")) if "column" in spec else None
        return IdSource(kind, self.loc((*path, "file")), file=file, column=spec.get("column"), column_loc=column_loc)

    def search_source(self, spec: str | dict[str, Any], path: located.Path) -> IdSource:
        """A search source; its Match expression is checked here, with the location inside the string."""
        if isinstance(spec, str):
            text_path: located.Path = (*path, "search")
            search = Search(spec)
        else:
            text_path = (*path, "search", "match")
            search = Search(spec["match"], spec.get("sort_by", "CreationTime:Desc"))
            sort_problem = check_sort_by(search.sort_by)
            if sort_problem:
                self.error((*path, "search", "sort_by"), sort_problem)
        try:
            parse(search.match)
        except MatchError as exc:
            line, col = self.doc.mark_in(text_path, exc.offset)
            self.problems.append(Problem(self.doc.file, line, col, format_path(text_path), exc.message))
        return IdSource("VideoId", self.loc((*path, "search")), search=search)

    def check_ids(self) -> None:
        for job in self.id_sources:
            if job.ids.search is not None:  # listed at run time, not here
                continue
            count = bad = 0
            try:
                for entry in read_ids(job.ids):
                    count += 1
                    message = entry.error or check_id(job.ids.kind, entry.value)
                    if message is None:
                        continue
                    bad += 1
                    if bad <= MAX_ID_PROBLEMS:
                        self.problems.append(Problem(entry.file, entry.line, entry.col, job.ids.loc.where, message))
            except ManifestError as exc:
                self.problems.extend(exc.problems)
                continue
            if bad > MAX_ID_PROBLEMS:
                self.problems.append(
                    job.ids.loc.problem(
                        f"{bad - MAX_ID_PROBLEMS} more invalid IDs in this source "
                        f"(the first {MAX_ID_PROBLEMS} are shown)"
                    )
                )
            if count == 0:
                self.problems.append(job.ids.loc.problem(f"job {job.name!r} lists no IDs; add some or remove the job"))
