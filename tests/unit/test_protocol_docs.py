"""docs/protocol.md and docs/asyncapi.yaml document what the code does.

Everything checked here is collected from the source, so a new error code, close code or message
type added to the code fails these tests until it is documented in both files.
"""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.settings import Settings
from ingest import protocol as p

ROOT = Path(__file__).parents[2]
PROTOCOL_MD = ROOT / "docs" / "protocol.md"
ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"
SOURCES = [ROOT / "ingest" / "protocol.py", ROOT / "ingest" / "connection.py", ROOT / "ingest" / "delivery.py"]


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _module_constants(path: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for node in _tree(path).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.value
    return out


def error_codes() -> set[str]:
    """Module-level constants of ingest/protocol.py whose value is their own name (CAPACITY = "CAPACITY")."""
    consts = _module_constants(ROOT / "ingest" / "protocol.py")
    return {name for name, value in consts.items() if name.isupper() and value == name}


def close_codes() -> dict[str, int]:
    consts = _module_constants(ROOT / "ingest" / "protocol.py")
    return {name: v for name, v in consts.items() if name.startswith("CLOSE_") and isinstance(v, int)}


def client_types() -> set[str]:
    """Types parse_text accepts: its `kind == "..."` branches, cross-checked with _MESSAGE_TYPES."""
    found: set[str] = set()
    for node in ast.walk(_tree(ROOT / "ingest" / "protocol.py")):
        if isinstance(node, ast.FunctionDef) and node.name == "parse_text":
            for cmp in ast.walk(node):
                if (isinstance(cmp, ast.Compare) and isinstance(cmp.left, ast.Name) and cmp.left.id == "kind"
                        and len(cmp.comparators) == 1 and isinstance(cmp.comparators[0], ast.Constant)
                        and isinstance(cmp.comparators[0].value, str)):
                    found.add(cmp.comparators[0].value)
    assert found == set(p._MESSAGE_TYPES), (found, p._MESSAGE_TYPES)
    return found


def _type_literals(path: Path) -> set[str]:
    """Values of "type" keys in dict literals and in keyword calls (dict(type=...))."""
    out: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (isinstance(key, ast.Constant) and key.value == "type" and isinstance(value, ast.Constant)
                        and isinstance(value.value, str)):
                    out.add(value.value)
    return out


def server_types() -> set[str]:
    types: set[str] = set()
    for path in SOURCES:
        types |= _type_literals(path)
    # Every public builder of ingest/protocol.py makes one server message named like the function
    # (error, session_started, transcript): calling it is the surest way to learn the type.
    builders = {
        name for name, obj in vars(p).items()
        if callable(obj) and getattr(obj, "__module__", None) == p.__name__ and not name.startswith("_")
        and not isinstance(obj, type) and not name.startswith(("parse_", "check_"))
    }
    assert builders, "no builder functions found in ingest/protocol.py"
    for name in builders:
        assert name in types, f"protocol builder {name}() makes a message type not seen as a literal"
    return types


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    doc = yaml.safe_load(ASYNCAPI.read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def md() -> str:
    return PROTOCOL_MD.read_text()


def _payload_types(payload: Any) -> set[str]:
    """The `type` consts a message payload schema allows (through oneOf / anyOf too)."""
    out: set[str] = set()
    if isinstance(payload, dict):
        const = payload.get("properties", {}).get("type", {}).get("const") if isinstance(
            payload.get("properties"), dict) else None
        if isinstance(const, str):
            out.add(const)
        for key in ("oneOf", "anyOf", "allOf"):
            for sub in payload.get(key, []) or []:
                out |= _payload_types(sub)
    return out


def _resolve(spec: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = spec
    for part in ref[2:].split("/"):
        node = node[part]
    if isinstance(node, dict) and "$ref" in node:
        return _resolve(spec, node["$ref"])
    return node


def _operation_types(spec: dict[str, Any], action: str) -> set[str]:
    out: set[str] = set()
    ops = [op for op in spec["operations"].values() if op["action"] == action]
    assert ops, f"no {action} operation"
    for op in ops:
        for ref in op["messages"]:
            message = _resolve(spec, ref["$ref"])
            payload = message["payload"]
            if isinstance(payload, dict) and "$ref" in payload:
                payload = _resolve(spec, payload["$ref"])
            out |= _payload_types(payload)
    return out


def _md_sections(md: str) -> set[str]:
    return set(re.findall(r"^###\s+`([a-z_]+)`", md, flags=re.M))


def test_asyncapi_parses_and_is_version_3(spec: dict[str, Any]) -> None:
    assert str(spec["asyncapi"]).startswith("3."), spec["asyncapi"]
    assert spec["channels"]["stream"]["address"] == "/v1/stream"
    query = spec["channels"]["stream"]["bindings"]["ws"]["query"]["properties"]
    assert {"sample_rate", "token"} <= set(query)
    assert any(s["host"].endswith(":8080") and s["protocol"] == "ws" for s in spec["servers"].values())


def test_error_codes_are_documented(spec: dict[str, Any], md: str) -> None:
    codes = error_codes()
    assert {"CHUNK_TOO_LARGE", "INTERNAL"} <= codes
    assert set(spec["components"]["schemas"]["errorCode"]["enum"]) == codes
    for code in codes:
        assert re.search(rf"^\| `{code}` \|", md, flags=re.M), f"docs/protocol.md error table lacks {code}"


def test_close_codes_are_documented(spec: dict[str, Any], md: str) -> None:
    codes = close_codes()
    assert codes["CLOSE_NORMAL"] == 1000 and len(codes) >= 6
    description = spec["info"]["description"]
    for name, value in codes.items():
        assert re.search(rf"^\| {value} \|", md, flags=re.M), f"docs/protocol.md close table lacks {value} ({name})"
        assert str(value) in description, f"asyncapi.yaml info.description lacks close code {value}"


def test_client_message_types_are_documented(spec: dict[str, Any], md: str) -> None:
    types = client_types()
    assert {"audio", "finalize", "end", "keepalive", "reconnect"} <= types
    assert types <= _operation_types(spec, "send")
    missing = types - _md_sections(md)
    assert not missing, f"docs/protocol.md has no section for client messages {missing}"


def test_server_message_types_are_documented(spec: dict[str, Any], md: str) -> None:
    types = server_types()
    assert {"session_started", "transcript", "error", "session_ended", "session_recovered"} <= types
    documented = _operation_types(spec, "receive")
    assert types <= documented, f"asyncapi.yaml lacks server messages {types - documented}"
    missing = types - _md_sections(md)
    assert not missing, f"docs/protocol.md has no section for server messages {missing}"


def _field_names(node: Any) -> set[str]:
    """Every property name declared anywhere in the AsyncAPI document (message fields, query), and
    every string a field may take from an ``enum`` (a final's ``reason``: ``soft_length``, ...)."""
    out: set[str] = set()
    if isinstance(node, dict):
        props = node.get("properties")
        if isinstance(props, dict):
            out |= set(props)
        values = node.get("enum")
        if isinstance(values, list):
            out |= {v for v in values if isinstance(v, str)}
        for value in node.values():
            out |= _field_names(value)
    elif isinstance(node, list):
        for value in node:
            out |= _field_names(value)
    return out


def _http_keys() -> set[str]:
    """String keys of dicts and subscripts in ingest/app.py: /v1/metrics fields, /readyz checks."""
    out: set[str] = set()
    for node in ast.walk(_tree(ROOT / "ingest" / "app.py")):
        if isinstance(node, ast.Dict):
            out |= {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
        elif (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
              and isinstance(node.slice.value, str)):
            out.add(node.slice.value)
    return out


SNAKE = re.compile(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)+)`")


def test_settings_named_in_the_docs_exist(spec: dict[str, Any], md: str) -> None:
    settings = {f.name for f in fields(Settings)}
    not_settings = (_field_names(spec) | _http_keys() | server_types() | client_types()) - settings
    named = set(SNAKE.findall(md)) - not_settings
    unknown = named - settings
    assert not unknown, f"docs/protocol.md names settings that do not exist: {sorted(unknown)}"
    for name in ("max_chunk_bytes", "max_frame_bytes", "max_send_queue_size", "slow_send_threshold",
                 "max_realtime_factor", "rate_limit_grace_seconds", "idle_timeout_seconds",
                 "max_connections_per_ip", "api_keys", "allowed_origins"):
        assert name in named, f"docs/protocol.md does not name {name}"


DEFAULT = re.compile(r"`([a-z][a-z0-9_]*)`[^`]{0,60}?default: (`[^`]*`|[^\s;),:]+)")


def _parse_default(text: str) -> object:
    text = text.strip("`")
    if text in ("true", "false"):
        return text == "true"
    if text.startswith('"'):
        return text.strip('"')
    try:
        return float(text)
    except ValueError:
        return text


def test_defaults_quoted_in_the_docs_match_the_code(md: str) -> None:
    defaults = Settings()
    quoted = DEFAULT.findall(md)
    assert len(quoted) >= 15, quoted
    for name, raw in quoted:
        assert hasattr(defaults, name), f"docs/protocol.md quotes a default for unknown setting {name}"
        actual = getattr(defaults, name)
        value = _parse_default(raw)
        if isinstance(actual, bool | str):
            assert value == actual, f"{name}: docs say {raw}, code has {actual!r}"
        else:
            assert isinstance(value, float) and value == float(actual), f"{name}: docs say {raw}, code has {actual!r}"


def test_limits_in_examples_match_the_defaults(md: str) -> None:
    """Messages quoted with numbers use the default limits."""
    s = Settings()
    assert f"hard limit of {s.max_frame_bytes} bytes" in md
    assert f"limit of {s.max_chunk_bytes} bytes" in md
    assert f"for {s.idle_timeout_seconds:g} s" in md
    assert f"faster than {s.max_realtime_factor:g}x real time" in md
