"""Check the examples of an API document against the OpenAPI description the app serves.

    python scripts/check_doc_examples.py docs/api.md

The document describes each endpoint under a heading `### METHOD /path`, with at least one
request example (an ```http block: the request line, headers, a blank line, a JSON body)
and one response example (an ```http block starting `HTTP/1.1 <status>`). Checked: every
endpoint of the app is documented and every documented one exists; request lines match their
heading; request bodies have exactly the fields of the schema, with the right types; response
statuses are ones the endpoint declares, error bodies have the format of docs/errors.md, and
every JSON example parses. Exit status 1 when anything is wrong, with one line per problem.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADING = re.compile(r"^### (GET|POST|PUT|PATCH|DELETE) (/\S*)\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")
TYPES = {"string": str, "integer": int, "boolean": bool, "null": type(None)}


def blocks(lines: list[str]):
    """(line number, language, text) of each fenced block, with the heading it is under."""
    heading, inside, start, language, body = None, False, 0, "", []
    for number, line in enumerate(lines, 1):
        fence = FENCE.match(line)
        if inside and line.startswith("```"):
            yield heading, start, language, "\n".join(body)
            inside = False
        elif fence:
            inside, start, language, body = True, number, fence.group(1), []
        elif inside:
            body.append(line)
        elif line.startswith("#"):  # a section ends at the next heading
            match = HEADING.match(line)
            heading = (match.group(1), match.group(2), number) if match else None


def split_http(text: str) -> tuple[str, object]:
    """The first line of an http example and its JSON body (None when it has none)."""
    head, _, body = text.partition("\n\n")
    return head.splitlines()[0].strip(), json.loads(body) if body.strip() else None


def type_ok(value: object, wanted: str | list[str]) -> bool:
    kinds = [wanted] if isinstance(wanted, str) else wanted
    if isinstance(value, bool):
        return "boolean" in kinds
    return any(isinstance(value, TYPES[kind]) for kind in kinds)


def check_request(operation: dict, body: object) -> list[str]:
    schema = (
        operation.get("requestBody", {})
        .get("content", {})
        .get("application/json", {})
        .get("schema")
    )
    if schema is None:
        return [] if body is None else ["this endpoint takes no body"]
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    problems = [
        f"missing required field {name!r}" for name in schema["required"] if name not in body
    ]
    for name, value in body.items():
        if name not in schema["properties"]:
            problems.append(f"unknown field {name!r}")
        elif not type_ok(value, schema["properties"][name]["type"]):
            problems.append(f"field {name!r} should be {schema['properties'][name]['type']}")
    return problems


def check_response(operation: dict, status_line: str, body: object) -> list[str]:
    status = status_line.split()[1] if len(status_line.split()) > 1 else "?"
    if status not in operation["responses"]:
        answers = ", ".join(operation["responses"])
        return [f"status {status} is not one this endpoint answers ({answers})"]
    if status == "204":
        return [] if body is None else ["a 204 answer has no body"]
    if int(status) >= 400:
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict) or set(error) != {"code", "message", "details"}:
            return ['an error body is {"error": {"code", "message", "details"}} (docs/errors.md)']
    return []


def check(doc: Path, openapi: dict) -> list[str]:
    problems: list[str] = []
    seen: dict[tuple[str, str], dict[str, int]] = {}
    for heading, line, language, text in blocks(doc.read_text(encoding="utf-8").splitlines()):
        where = f"{doc}:{line}"
        if language == "json":
            try:
                json.loads(text)
            except ValueError as exc:
                problems.append(f"{where}: the JSON example does not parse: {exc}")
            continue
        if language != "http" or heading is None:
            continue
        method, path, _ = heading
        operation = openapi["paths"].get(path, {}).get(method.lower())
        if operation is None:
            continue  # reported once below, for the heading
        counts = seen.setdefault((method, path), {"request": 0, "response": 0})
        try:
            first, body = split_http(text)
        except ValueError as exc:
            problems.append(f"{where}: the JSON body does not parse: {exc}")
            continue
        if first.startswith("HTTP/"):
            counts["response"] += 1
            problems += [f"{where}: {p}" for p in check_response(operation, first, body)]
            continue
        counts["request"] += 1
        template = "^" + re.sub(r"\\\{\w+\\\}", r"\\d+", re.escape(path)) + r"(\?\S*)?$"
        line_method, _, target = first.partition(" ")
        if line_method != method or not re.match(template, target.split()[0] if target else ""):
            problems.append(f"{where}: the request line {first!r} is not {method} {path}")
        problems += [f"{where}: {p}" for p in check_request(operation, body)]
    headings = {(m, p): n for m, p, n in _headings(doc)}
    for (method, path), line in headings.items():
        if method.lower() not in openapi["paths"].get(path, {}):
            problems.append(f"{doc}:{line}: {method} {path} is not an endpoint of the app")
        else:
            counts = seen.get((method, path), {"request": 0, "response": 0})
            problems += [
                f"{doc}:{line}: {method} {path} has no {kind} example"
                for kind, n in counts.items()
                if not n
            ]
    for path, operations in openapi["paths"].items():
        problems += [
            f"{doc}: {m.upper()} {path} is not documented"
            for m in operations
            if (m.upper(), path) not in headings
        ]
    return problems


def _headings(doc: Path):
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        if match := HEADING.match(line):
            yield match.group(1), match.group(2), number


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from backend.app.main import create_app  # noqa: PLC0415 - the app of this checkout

    doc = Path(argv[0])
    openapi = create_app(":memory:", "docs-check").openapi()
    problems = check(doc, openapi)
    for problem in problems:
        print(problem)
    endpoints = sum(len(operations) for operations in openapi["paths"].values())
    print(f"{doc}: {endpoints} endpoints, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
