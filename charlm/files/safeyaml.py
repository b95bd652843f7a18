"""YAML that cannot hurt: the config files and `--set` values charlm reads.

A config is small plain data, so anything else is refused before it costs time or memory: aliases and
anchors (a few hundred bytes of nested aliases expand to gigabytes), duplicate keys (the last one would
silently win), nesting deeper than MAX_DEPTH, and files over MAX_BYTES.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from charlm.errors import ConfigError

MAX_BYTES = 1 << 20  # 1 MB: the largest shipped config is about 2 KB
MAX_DEPTH = 16


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses aliases, anchors, duplicate keys and deep nesting while composing."""

    depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused("uses YAML anchors or aliases (& and *)", event.start_mark)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refused(f"is nested deeper than {MAX_DEPTH} levels", event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise _Refused(f"repeats the key {str(key)[:80]!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


class _Refused(Exception):
    def __init__(self, what: str, mark):
        super().__init__(what)
        self.what, self.line = what, (mark.line + 1 if mark is not None else None)


def load_text(text: str, source: str) -> object:
    """Parse YAML `text` (from `source`, named in errors) into plain data, or raise ConfigError."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except _Refused as e:
        where = f" at line {e.line}" if e.line else ""
        raise ConfigError(f"{source} {e.what}{where}: write plain values (config files are plain data)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source} is not valid YAML{where}: fix the syntax") from None


def load_file(path: Path) -> object:
    """A config file's plain data: a regular UTF-8 file of at most MAX_BYTES."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} not found: check the path (see configs/ for examples)")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a regular file: pass a YAML file (see configs/)")
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(
                f"config file {path} is {size:,} bytes, over the {MAX_BYTES:,}-byte limit: "
                "a config is a few plain sections (see configs/)"
            )
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not valid YAML (not UTF-8 text): save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path} ({e.strerror or e}): check its permissions") from None
    return load_text(text, f"config file {path}")


def load_value(text: str, source: str) -> object:
    """A `--set` value: YAML when it parses as YAML, else the text as typed; refused constructs still raise."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except _Refused as e:
        raise ConfigError(f"{source} {e.what}: write a plain value") from None
    except yaml.YAMLError:
        return text
