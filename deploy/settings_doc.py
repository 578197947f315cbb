"""Print the README's settings tables from the services' settings classes.

    python -m deploy.settings_doc     # Markdown, one table per service

Each row: the environment variable, its default, and the comment written above the field
in `services/<name>/settings.py` (so the README says what the code says).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys

from shared.settings import ServiceSettings

SERVICES = ("queue", "intake", "summarizer", "gateway", "channels")
SECRET_HINTS = ("key", "token", "secret", "password")


def field_comments(cls: type) -> dict[str, str]:
    """The comment lines directly above each annotated field in the class body; a field
    with none, in a group of fields with no blank line between, shares its group's comment."""
    source = inspect.getsource(cls)
    lines = source.splitlines()
    out: dict[str, str] = {}
    group_comment = ""
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comment: list[str] = []
            i = node.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#"):
                comment.insert(0, lines[i].strip().lstrip("#").strip())
                i -= 1
            if comment:
                group_comment = " ".join(comment)
            elif i < 0 or not lines[i].strip():
                group_comment = ""
            out[node.target.id] = group_comment
    return out


def settings_class(service: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"services.{service}.settings")
    found = [c for c in vars(module).values()
             if isinstance(c, type) and issubclass(c, ServiceSettings) and c is not ServiceSettings
             and c.__module__ == module.__name__]
    if len(found) != 1:
        raise RuntimeError(f"services/{service}/settings.py should define one settings class, found {found}")
    return found[0]


def own_fields(cls: type[ServiceSettings]) -> list[str]:
    """Fields the service adds, plus common ones whose default it changes."""
    base = ServiceSettings.model_fields
    names = []
    for name, field in cls.model_fields.items():
        if name not in base or field.default != base[name].default:
            names.append(name)
    return names


def _default(name: str, value: object) -> str:
    if value is None or value == "":
        return "empty"
    if isinstance(value, str) and any(h in name for h in SECRET_HINTS):  # never print a secret
        return "empty"
    return f"`{value}`"


def table(service: str) -> str:
    cls = settings_class(service)
    comments = field_comments(ServiceSettings)
    for klass in reversed(cls.__mro__):
        if isinstance(klass, type) and issubclass(klass, ServiceSettings) and klass is not ServiceSettings:
            comments.update({k: v for k, v in field_comments(klass).items() if v})
    rows = [f"### {service}", "", "| variable | default | meaning |", "|---|---|---|"]
    for name in own_fields(cls):
        field = cls.model_fields[name]
        meaning = comments.get(name) or (field.description or "")
        rows.append(f"| `{name.upper()}` | {_default(name, field.default)} | {meaning.replace('|', '/')} |")
    return "\n".join(rows)


def render() -> str:
    return "\n\n".join(table(s) for s in SERVICES)


if __name__ == "__main__":
    sys.stdout.write(render() + "\n")
