"""Every command the README shows parses: its program, module, script and requirement files
exist, its flags are flags of that program, its --config file loads (with its `:argument`),
and its --config.a.b overrides name keys of that config. Nothing runs.

Commands are the README's indented lines and `inline` spans that start with python, ptjax,
pip, main.py, launch/ or sbatch. Words in capitals (NAME, DIR, TASK) and `...` are
placeholders: a placeholder config is not loaded, a placeholder value is not checked.
"""

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from ptjax import api, console
from ptjax.interop.__main__ import parse as parse_interop

REPO = Path(__file__).resolve().parents[1]
STARTS = ("python ", "ptjax ", "pip ", "main.py ", "launch/", "sbatch ", "XLA_FLAGS=")
MAIN_FLAGS = {"--config", "--workdir", "--distributed", "--help"}


def readme_commands() -> list[str]:
    text = re.sub(r"```.*?```", "", (REPO / "README.md").read_text(), flags=re.S)  # fenced: Python code
    lines = [line[4:] for line in text.splitlines() if line.startswith("    ")]
    spans = re.findall(r"`([^`\n]+)`", text)
    found = []
    for candidate in lines + spans:
        candidate = candidate.split(" #")[0].strip()
        if re.match(r"^\S+ {3,}\S", candidate):  # a layout listing ("main.py    entry point")
            continue
        for part in candidate.split("&&"):
            part = part.strip()
            if part.startswith(STARTS):
                found.append(part)
    return sorted(set(found))


def placeholder(word: str) -> bool:
    return "..." in word or bool(re.search(r"\b[A-Z][A-Z_]*\b", word)) or word.startswith("[")


def flags_of(module_file: Path) -> set[str]:
    """--names an absl (DEFINE_*("name") or argparse (add_argument("--name")) module accepts."""
    source = module_file.read_text()
    names = {f"--{n}" for n in re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", source)}
    names |= set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", source))
    if "cli.parse_flags" in source or "from ptjax import cli" in source:
        names |= MAIN_FLAGS
    return names


def check_config_flags(words: list[str], known: set[str]) -> None:
    config = None
    for i, word in enumerate(words):
        if placeholder(word) or not word.startswith("--"):
            continue
        name, _, value = word.partition("=")
        if name == "--config":
            value = value or words[i + 1]
            if not placeholder(value):
                path, colon, argument = value.partition(":")
                assert (REPO / path).is_file(), f"{path}: no such config"
                config = api.get_config(value)
            continue
        if name.startswith("--config."):
            key = name[len("--config."):].split("{")[0].rstrip(".")
            assert key, word
            node = config if config is not None else api.get_config("base")
            for part in key.split("."):
                assert part in node, f"{word}: no config key {key!r}"
                node = node[part]
            continue
        assert name in known, f"{name}: not a flag here (known: {sorted(known)})"


def check(command: str) -> None:
    words = shlex.split(command.replace("[", " [").replace("]", "] "))
    while words and re.match(r"^[A-Z_]+=", words[0]):  # environment assignments
        words = words[1:]
    program, args = words[0], words[1:]
    if program == "pip":
        for i, word in enumerate(args):
            if word == "-r":
                assert (REPO / args[i + 1]).is_file(), args[i + 1]
        return
    if program == "sbatch":
        program, args = next((w, args[j + 1:]) for j, w in enumerate(args) if w.startswith("launch/"))
    if program.startswith("launch/"):
        assert (REPO / program).is_file(), program
        return check_config_flags(args, MAIN_FLAGS)
    if program == "main.py":
        program, args = "python", ["main.py", *args]
    if program == "python":
        if args[0] == "main.py":
            return check_config_flags(args[1:], MAIN_FLAGS)
        assert args[0] == "-m", command
        module = args[1]
        if module == "pytest":
            assert (REPO / args[2]).is_dir(), command  # the test folder
            return
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{module}: no such module"
        path = Path(spec.origin)
        if module == "ptjax.interop":
            parse_interop(args[2:])  # argparse: exits on an unknown flag or a missing one
            return
        return check_config_flags(args[2:], flags_of(path))
    assert program == "ptjax", command
    sub = args[0] if args and not args[0].startswith("-") else ""
    assert sub in ("", *console.SUBCOMMANDS), f"ptjax {sub}: no such command"
    if sub == "list":
        assert args[1] in ("configs", "tasks"), command
    elif sub in ("export-peft", "import-peft"):
        parse_interop([sub.split("-")[0], *args[1:]])
    elif sub == "serve":
        check_config_flags(args[1:], flags_of(REPO / "ptjax" / "serve.py"))
    else:
        check_config_flags(args[2 if sub == "eval" else 1 if sub else 0:], MAIN_FLAGS)


def config_mentions() -> list[str]:
    """Config files the README names (`lama_paper.py:manual`, `conll03_*.py`)."""
    text = (REPO / "README.md").read_text()
    return sorted(set(re.findall(r"`(?:configs/)?([\w*]+\.py(?::[\w,|\[\]A-Z]+)?)`", text)))


def test_the_readme_shows_commands():
    commands = readme_commands()
    assert any(c.startswith("python main.py --config configs/quickstart.py") for c in commands)
    assert any(c.startswith("ptjax --config configs/quickstart.py") for c in commands)


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command):
    check(command)


@pytest.mark.parametrize("mention", config_mentions())
def test_readme_config_exists_and_loads(mention):
    name, _, argument = mention.partition(":")
    if name in ("main.py", "plan.py") or name.startswith("ptjax"):
        return
    matches = list((REPO / "configs").glob(name))
    assert matches, f"README names {mention}: no such config"
    if argument and not placeholder(argument):
        api.get_config(f"configs/{name}:{argument}")
