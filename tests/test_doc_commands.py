"""The commands and Python the README and the docs show still fit the code: a renamed option,
sub-command, function, attribute or keyword fails here, not in a user's shell.

Complete commands (fenced ``bash`` blocks) go through the real parsers: ``stereodrr``'s and, for
``python experiments/<script>.py``, the script's own (read by running the script up to its
``parse_args``, which every experiment calls before any work). Commands quoted inline in prose
are often fragments (``stereodrr render --phantom``): there every sub-command and option named
must exist. A single capital letter (``--seed S``) stands for a number.

Python blocks are read, not run (they name the user's files): every ``stereodrr`` import
resolves, every attribute reached from a stereodrr module or class exists, and every keyword
passed to a stereodrr function or class is one of its parameters.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import re
import runpy
import shlex
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from stereodrr.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
_FENCE = re.compile(r"^```(\w*)\s*$")
_SHELL = ("bash", "sh", "shell", "console", "")
_COMMAND = re.compile(r"^(?:PYTHONPATH=\S+ )?(stereodrr \S|python experiments/)")
_INLINE = re.compile(r"`((?:PYTHONPATH=\S+ )?(?:stereodrr [a-z]|python experiments/)[^`]*)`")


def _blocks(text: str, languages: tuple[str, ...]) -> list[str]:
    """The page's fenced code blocks in one of ``languages``."""
    out: list[str] = []
    lang: str | None = None
    block: list[str] = []
    for line in text.splitlines():
        m = _FENCE.match(line.strip())
        if lang is None and m:
            lang, block = m.group(1), []
        elif lang is not None and line.strip() == "```":
            if lang in languages:
                out.append("\n".join(block))
            lang = None
        elif lang is not None:
            block.append(line)
    return out


def _shell_lines(text: str) -> list[str]:
    """The command lines of the page's shell blocks (continuations joined, comments dropped)."""
    out = []
    for block in _blocks(text, _SHELL):
        for cmd in block.replace("\\\n", " ").splitlines():
            cmd = re.sub(r"\s+#.*$", "", cmd.strip().removeprefix("$ ").strip())
            if _COMMAND.match(cmd):
                out.append(cmd)
    return out


def _tokens(cmd: str) -> list[str]:
    words = shlex.split(re.sub(r"^PYTHONPATH=\S+ ", "", cmd))
    return ["0" if re.fullmatch(r"[A-Z]", w) else w for w in words]


def _cases(inline: bool) -> list[tuple[str, str]]:
    cases = []
    for page in PAGES:
        text = page.read_text()
        found = [" ".join(m.group(1).split()) for m in _INLINE.finditer(text)] if inline else _shell_lines(text)
        cases += [(str(page.relative_to(ROOT)), cmd) for cmd in found]
    return cases


class _Parsed(Exception):
    pass


@cache
def _script_parser(script: str) -> argparse.ArgumentParser:
    """The experiment's parser, taken at its ``parse_args`` call (nothing after it runs)."""
    def stop(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise _Parsed(self)

    path = ROOT / "experiments" / script
    assert path.exists(), f"experiments/{script} does not exist"
    saved, argv = argparse.ArgumentParser.parse_args, sys.argv
    argparse.ArgumentParser.parse_args = stop  # type: ignore[method-assign,assignment]
    sys.argv = [str(path)]
    try:
        runpy.run_path(str(path), run_name="__main__")
    except _Parsed as got:
        return got.args[0]
    finally:
        argparse.ArgumentParser.parse_args = saved  # type: ignore[method-assign]
        sys.argv = argv
    raise AssertionError(f"experiments/{script} never parsed its arguments")


def _parser_and_args(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    if words[0] == "stereodrr":
        return build_parser(), words[1:]
    assert words[:1] == ["python"] and words[1].startswith("experiments/"), words
    return _script_parser(words[1].removeprefix("experiments/")), words[2:]


def _parse(parser: argparse.ArgumentParser, args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        parser.parse_args(args)
    except SystemExit:
        raise AssertionError(capsys.readouterr().err.strip().splitlines()[-1]) from None


@pytest.mark.parametrize(("page", "cmd"), _cases(inline=False), ids=lambda x: x if x.endswith(".md") else "")
def test_shown_commands_parse(page: str, cmd: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser, args = _parser_and_args(_tokens(cmd))
    _parse(parser, args, capsys)


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert name in sub.choices, f"stereodrr has no command {name!r}"
    return sub.choices[name]


@pytest.mark.parametrize(("page", "cmd"), _cases(inline=True), ids=lambda x: x if x.endswith(".md") else "")
def test_quoted_commands_name_real_options(page: str, cmd: str) -> None:
    words = re.sub(r"^PYTHONPATH=\S+ ", "", cmd).split()
    if words[0] == "stereodrr":
        parsers = [_subparser(n) for n in words[1].split("|")]
    elif "<" in words[1]:  # `python experiments/<study>.py`: any of them
        return
    else:
        parsers = [_script_parser(words[1].removeprefix("experiments/"))]
    for option in (w.strip("[]").split("=")[0] for w in words[2:]):
        if re.fullmatch(r"--?[a-z][a-z0-9-]*", option):
            for p in parsers:
                assert option in p._option_string_actions, f"{p.prog} has no option {option}"


def _imported(tree: ast.AST) -> dict[str, Any]:
    """What the block's ``stereodrr`` imports bind, by name."""
    names: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "stereodrr":
                    module = importlib.import_module(a.name)
                    names[a.asname or "stereodrr"] = module if a.asname else importlib.import_module("stereodrr")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "stereodrr":
            module = importlib.import_module(str(node.module))
            for a in node.names:
                if not hasattr(module, a.name):
                    importlib.import_module(f"{node.module}.{a.name}")  # a sub-module
                assert hasattr(module, a.name), f"{node.module} has no {a.name}"
                names[a.asname or a.name] = getattr(module, a.name)
    return names


def _resolve(node: ast.expr, names: dict[str, Any]) -> Any:
    """The stereodrr object a name or attribute chain denotes (``None``: not stereodrr's, or an
    instance whose attributes are not known without running the block)."""
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, names)
        if inspect.ismodule(base) or inspect.isclass(base):
            assert hasattr(base, node.attr), f"{ast.unparse(node)}: {base.__name__} has no {node.attr!r}"
            return getattr(base, node.attr)
    return None


def _python_blocks() -> list[tuple[str, str]]:
    return [(str(page.relative_to(ROOT)), block) for page in PAGES for block in _blocks(page.read_text(), ("python",))]


@pytest.mark.parametrize(("page", "code"), _python_blocks(), ids=lambda x: x if x.endswith(".md") else "")
def test_shown_python_names_real_functions_and_keywords(page: str, code: str) -> None:
    tree = ast.parse(code)
    names = _imported(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            _resolve(node, names)
        if isinstance(node, ast.Call) and callable(fn := _resolve(node.func, names)):
            try:
                params = inspect.signature(fn).parameters
            except (TypeError, ValueError):  # a builtin without a signature
                continue
            if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
                continue
            for k in (k.arg for k in node.keywords if k.arg):
                assert k in params, f"{ast.unparse(node.func)}() takes no keyword {k!r}"
