"""A contract file (YAML or JSON): the events, the service and how the two meet, in one place.

`load_contract(path)` reads and checks the whole file before anything runs;
every mistake is one `ContractError` line naming the file and the key
(`payments.yaml: response.fields.score.type: must be one of ...`), unknown
keys included, so a typo cannot silently fall back to a default. The format,
with the project's fraud-scoring service as its example, is
`transforms/contract/payments.yaml` (the default contract) and the README's
"Enrich your own events".
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from transforms.contract.codec import Codec, RequestBody, ResponseBody, ResultDocument
from transforms.contract.fields import FieldSpec
from transforms.contract.http import Auth, Endpoint, Tls
from transforms.contract.schema import EventSchema
from transforms.contract.secrets import SecretSource
from transforms.control.signals import StatusClasses

DEFAULT_CONTRACT = Path(__file__).with_name("payments.yaml")


class ContractError(ValueError):
    """A contract that cannot work; `str(e)` is one line naming the file and the key."""


@dataclass(frozen=True)
class Contract:
    schema: EventSchema
    endpoint: Endpoint
    request: RequestBody
    response: ResponseBody
    result: ResultDocument
    status: StatusClasses
    probe_event: str | None = None      # JSON of the probe's event; None = made from the fields' examples
    source: str = "<contract>"

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the codec: its msgspec classes are made at run time, in each process."""
        return {k: v for k, v in self.__dict__.items() if k != "_codec"}

    def codec(self) -> Codec:
        codec: Codec | None = self.__dict__.get("_codec")
        if codec is None:
            codec = Codec(self.schema, self.request, self.response, self.result)
            object.__setattr__(self, "_codec", codec)
        return codec

    def as_dict(self, result: tuple[Any, ...]) -> dict[str, Any]:
        """A result as {output name: value}."""
        return {f.output_name: v for f, v in zip(self.response.fields, result)}

    def with_url(self, url: str) -> Contract:
        _check_url(url, "--service_url")
        return replace(self, endpoint=replace(self.endpoint, url=url))

    def probe(self) -> Mapping[str, Any] | None:
        return json.loads(self.probe_event) if self.probe_event is not None else None


def load_contract(path: str | Path) -> Contract:
    """The contract in `path`; ContractError (one line) if it cannot be read or cannot work."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ContractError(f"cannot read contract {path}: {e.strerror or e}") from None
    try:
        doc = json.loads(text, object_pairs_hook=_unique_json) if path.suffix == ".json" else yaml.load(text, _UniqueKeys)
    except (json.JSONDecodeError, yaml.YAMLError, _Repeated) as e:
        raise ContractError(f"{path.name}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                            f"{' '.join(str(e).split())}") from None
    return parse_contract(doc, path.name)


class _Repeated(ValueError):
    """A key named twice in one mapping: both parsers would keep the last one without a word."""


def _unique_json(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise _Repeated(f"{next(k for k, _ in pairs if [p[0] for p in pairs].count(k) > 1)!r} is named twice")
    return doc


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, refusing a key named twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _Repeated(f"{key!r} is named twice (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_contract(doc: Any, source: str = "<contract>") -> Contract:
    try:
        return _Reader(source).contract(doc)
    except ContractError:
        raise
    except ValueError as e:   # a dataclass refused a combination: its message names the keys
        raise ContractError(f"{source}: {e}") from None


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> ContractError:
        return ContractError(f"{self.source}: {where}: {message}")

    def section(self, doc: Any, where: str, known: tuple[str, ...], required: tuple[str, ...] = ()
                ) -> dict[str, Any]:
        if doc is None and not required:
            return {}
        if not isinstance(doc, dict):
            raise self.fail(where, "must be a mapping")
        unknown = [k for k in doc if k not in known]
        if unknown:
            raise self.fail(f"{where}.{unknown[0]}" if where else str(unknown[0]),
                            f"unknown key (known: {', '.join(known)})")
        missing = [k for k in required if doc.get(k) is None]
        if missing:
            raise self.fail(f"{where}.{missing[0]}" if where else missing[0], "is required")
        return doc

    def typed(self, value: Any, where: str, kind: type | tuple[type, ...], what: str) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise self.fail(where, f"must be {what} (got {value!r})")
        return value

    def contract(self, doc: Any) -> Contract:
        top = self.section(doc, "", ("event", "service", "request", "response", "status", "result", "probe"),
                           required=("event", "service", "response"))
        schema = self.schema(top["event"])
        endpoint = self.endpoint(top["service"])
        request = self.request(top.get("request"), schema)
        response = self.response(top["response"])
        result = self.result(top.get("result"))
        status = self.status(top.get("status"))
        probe = self.section(top.get("probe"), "probe", ("event",))
        probe_event = probe.get("event")
        if probe_event is not None and not isinstance(probe_event, dict):
            raise self.fail("probe.event", "must be a mapping (an event of the schema)")
        outputs = [f.output_name for f in response.fields] + list(result.metadata)
        clash = next((n for n in outputs if outputs.count(n) > 1 or n in schema.names), None)
        if clash is not None:
            raise self.fail("response.fields", f"the output name {clash!r} is used twice or is an event field "
                                               "(rename it with `as:`)")
        contract = Contract(schema, endpoint, request, response, result, status,
                            json.dumps(probe_event) if probe_event is not None else None, self.source)
        contract.codec()   # builds the msgspec types now, so a field msgspec cannot express fails at load
        return contract

    # ---- event --------------------------------------------------------------------------------

    def schema(self, doc: Any) -> EventSchema:
        event = self.section(doc, "event", ("fields", "id", "shard_key", "max_bytes"), required=("fields", "id"))
        fields = self.fields(event["fields"], "event.fields", outputs=False)
        max_bytes = self.typed(event.get("max_bytes"), "event.max_bytes", int, "an integer") or 64 * 1024
        id_field = self.typed(event["id"], "event.id", str, "a field name")
        shard_key = self.typed(event.get("shard_key"), "event.shard_key", str, "a field name") or id_field
        return EventSchema(fields, id_field, shard_key, max_bytes)

    _FIELD_KEYS = ("type", "required", "default", "min_length", "max_length", "minimum", "maximum",
                   "exclusive_minimum", "exclusive_maximum", "pattern", "format", "enum", "not_blank", "example")

    def fields(self, doc: Any, where: str, outputs: bool) -> tuple[FieldSpec, ...]:
        if not isinstance(doc, dict) or not doc:
            raise self.fail(where, "must map each field's name to its rules")
        specs = []
        for name, rules in doc.items():
            at = f"{where}.{name}"
            rules = self.section(rules, at, self._FIELD_KEYS + (("as",) if outputs else ()))
            if "type" not in rules:
                raise self.fail(f"{at}.type", "is required")
            enum = rules.get("enum")
            if enum is not None and not isinstance(enum, list):
                raise self.fail(f"{at}.enum", "must be a list")
            numbers = {k: self.typed(rules.get(k), f"{at}.{k}", (int, float), "a number")
                       for k in ("minimum", "maximum", "exclusive_minimum", "exclusive_maximum")}
            lengths = {k: self.typed(rules.get(k), f"{at}.{k}", int, "an integer") for k in ("min_length", "max_length")}
            try:
                specs.append(FieldSpec(
                    name=str(name), type=rules["type"],
                    required=bool(self.typed(rules.get("required", True), f"{at}.required", bool, "true or false")),
                    default=rules.get("default"), **numbers, **lengths,
                    pattern=self.typed(rules.get("pattern"), f"{at}.pattern", str, "a regular expression"),
                    format=rules.get("format"), enum=tuple(enum) if enum is not None else None,
                    not_blank=bool(self.typed(rules.get("not_blank", False), f"{at}.not_blank", bool, "true or false")),
                    example=rules.get("example"),
                    output=self.typed(rules.get("as"), f"{at}.as", str, "a name")))
            except ValueError as e:
                raise self.fail(at, str(e).split(": ", 1)[-1]) from None
        return tuple(specs)

    # ---- service ------------------------------------------------------------------------------

    def endpoint(self, doc: Any) -> Endpoint:
        svc = self.section(doc, "service", ("url", "method", "headers", "auth", "tls", "idempotency_header",
                                            "connect_timeout_s"), required=("url",))
        url = self.typed(svc["url"], "service.url", str, "a URL")
        try:
            _check_url(url, "service.url")
        except ContractError as e:
            raise self.fail("service.url", str(e).split(": ", 1)[-1]) from None
        method = self.typed(svc.get("method", "POST"), "service.method", str, "an HTTP method").upper()
        if method not in ("POST", "PUT", "PATCH"):
            raise self.fail("service.method", f"must be POST, PUT or PATCH: the batch is the body (got {method})")
        headers = self.section(svc.get("headers"), "service.headers", tuple(svc.get("headers") or ()))
        for name, value in headers.items():
            if not isinstance(value, str):
                raise self.fail(f"service.headers.{name}", "must be a string (secrets go under service.auth)")
        return Endpoint(
            url=url, method=method, headers=tuple(headers.items()), auth=self.auth(svc.get("auth")),
            tls=self.tls(svc.get("tls")),
            idempotency_header=self.typed(svc.get("idempotency_header", "Idempotency-Key"),
                                          "service.idempotency_header", str, "a header name"),
            connect_timeout_s=float(self.typed(svc.get("connect_timeout_s", 3.0), "service.connect_timeout_s",
                                               (int, float), "seconds")))

    def auth(self, doc: Any) -> Auth | None:
        if doc is None:
            return None
        auth = self.section(doc, "service.auth", ("type", "env", "file", "optional", "username", "header"),
                            required=("type",))
        if not auth.get("env") and not auth.get("file"):
            raise self.fail("service.auth", "needs `env` (an environment variable) or `file` holding the secret")
        secret = SecretSource(env=self.typed(auth.get("env"), "service.auth.env", str, "a variable name"),
                              file=self.typed(auth.get("file"), "service.auth.file", str, "a path"),
                              optional=bool(auth.get("optional", False)))
        return Auth(kind=auth["type"], secret=secret, username=auth.get("username"), header=auth.get("header"))

    def tls(self, doc: Any) -> Tls | None:
        if doc is None:
            return None
        tls = self.section(doc, "service.tls", ("ca_file", "cert_file", "key_file", "verify"))
        if tls.get("key_file") and not tls.get("cert_file"):
            raise self.fail("service.tls.key_file", "needs service.tls.cert_file")
        for key in ("ca_file", "cert_file", "key_file"):
            if tls.get(key) and not Path(tls[key]).is_file():
                raise self.fail(f"service.tls.{key}", f"no such file {tls[key]}")
        return Tls(ca_file=tls.get("ca_file"), cert_file=tls.get("cert_file"), key_file=tls.get("key_file"),
                   verify=bool(tls.get("verify", True)))

    def request(self, doc: Any, schema: EventSchema) -> RequestBody:
        req = self.section(doc, "request", ("fields", "wrap", "static"))
        chosen = req.get("fields", "all")
        if chosen == "all":
            pairs = [(n, n) for n in schema.names]
        elif isinstance(chosen, list):
            pairs = [(str(n), str(n)) for n in chosen]
        elif isinstance(chosen, dict):
            pairs = [(str(k), str(v)) for k, v in chosen.items()]
        else:
            raise self.fail("request.fields", "must be `all`, a list of event fields or a mapping "
                                              "{event field: name in the request}")
        unknown = [n for n, _ in pairs if n not in schema.names]
        if unknown:
            raise self.fail("request.fields", f"{unknown[0]!r} is not an event field")
        wrap = self.typed(req.get("wrap"), "request.wrap", str, "a dotted path")
        static = self.section(req.get("static"), "request.static", tuple(req.get("static") or ()))
        if static and not wrap:
            raise self.fail("request.static", "needs request.wrap (the list's member in the body)")
        return RequestBody(tuple(pairs), tuple(wrap.split(".")) if wrap else (), tuple(static.items()))

    def response(self, doc: Any) -> ResponseBody:
        resp = self.section(doc, "response", ("results", "match", "id", "fields", "max_bytes"),
                            required=("fields",))
        results = self.typed(resp.get("results", "results"), "response.results", str, "a dotted path (\"\" = the body)")
        match = resp.get("match", "position")
        if match not in ("position", "id"):
            raise self.fail("response.match", f"must be position or id (got {match!r})")
        id_field = self.typed(resp.get("id"), "response.id", str, "a field name")
        if match == "id" and not id_field:
            raise self.fail("response.id", "is required when response.match is id")
        return ResponseBody(fields=self.fields(resp["fields"], "response.fields", outputs=True),
                            results_at=tuple(results.split(".")) if results else (), match=match, id_field=id_field,
                            max_bytes=self.typed(resp.get("max_bytes"), "response.max_bytes", int, "an integer")
                            or 4 * 1024 * 1024)

    def result(self, doc: Any) -> ResultDocument:
        res = self.section(doc, "result", ("carry_unknown_fields", "latency_ms", "attempts", "enriched_at_ms"))
        defaults = ResultDocument()
        names = {k: (self.typed(res[k], f"result.{k}", str, "a field name or null") if k in res else getattr(defaults, k))
                 for k in ("latency_ms", "attempts", "enriched_at_ms")}
        carry = self.typed(res.get("carry_unknown_fields", True), "result.carry_unknown_fields", bool, "true or false")
        return ResultDocument(carry_unknown_fields=carry, **names)

    def status(self, doc: Any) -> StatusClasses:
        groups = ("success", "retryable", "congestion", "reject", "stop")
        status = self.section(doc, "status", groups)
        for name, codes in status.items():
            if not isinstance(codes, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in codes):
                raise self.fail(f"status.{name}", "must be a list of HTTP status codes")
        return StatusClasses.of(**status)


def _check_url(url: str, where: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ContractError(f"{where}: must be an http(s) URL with a host (got {url!r})")
