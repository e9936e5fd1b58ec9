"""The `ptjax` command (`pip install .` puts it on the PATH).

    ptjax --config configs/NAME.py --workdir DIR [--config.a.b=value ...]   what `python main.py` does
    ptjax eval EXPORT --workdir DIR [--config.data_dir=... ...]            evaluate a prompt export with
                                                                          the settings it was trained with
    ptjax plan --config configs/NAME.py [--config.plan.devices=8 ...]     mode "plan": memory and FLOPs
    ptjax serve --config configs/NAME.py --export TASK=EXPORT ...         as python -m ptjax.serve
    ptjax generate --restore RUN/export --input in.jsonl [--output ...]   as python -m ptjax.generate
    ptjax export-peft --restore RUN/export --to RUN/peft                  as python -m ptjax.interop export
    ptjax import-peft --adapter PEFT_DIR --to RUN/imported                as python -m ptjax.interop import
    ptjax list configs | tasks                                            what ships, one line each

--config takes a file, or the name of a config that ships with ptjax ("quickstart",
"lama_paper.py:manual"), so an installed ptjax runs its configs from any folder.
Bad input ends with one line `error: ...` and exit status 2.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
SUBCOMMANDS = ("eval", "plan", "serve", "generate", "export-peft", "import-peft", "list")


def config_description(path: Path) -> str:
    """The first sentence of a config file's docstring, up to a colon (read without importing it)."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    end = re.search(r"(?<!\bsec)(?<!e\.g)(?<!i\.e)[.?]\s+(?=[A-Z(])", first)  # not "sec. 4.1"
    first = first[: end.start() + 1] if end else first
    depth = 0
    for i, char in enumerate(first):  # a long sentence stops at its first top-level colon
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == ":" and depth == 0 and i >= 30 and first[i + 1: i + 2] == " ":
            return first[:i]
    return first


def list_configs() -> list[tuple[str, str]]:
    return [(p.stem, config_description(p)) for p in sorted(CONFIGS_DIR.glob("*.py")) if p.stem != "__init__"]


def list_tasks() -> list[tuple[str, str]]:
    from ptjax.tasks import get_task, task_names

    return [(name, f"{get_task(name).kind}: {get_task(name).description}".rstrip(": "))
            for name in task_names()]


def resolve_config_path(value: str) -> str:
    """--config's value as given where that file exists, else the packaged config of that name
    (configs/quickstart.py, quickstart.py and quickstart all name ptjax/configs/quickstart.py)."""
    path, colon, args = value.partition(":")
    if Path(path).exists():
        return value
    name = Path(path).name
    packaged = CONFIGS_DIR / (name if name.endswith(".py") else name + ".py")
    return str(packaged) + colon + args if packaged.exists() else value


def with_packaged_configs(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = resolve_config_path(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + resolve_config_path(arg[len("--config="):])
    return out


def _has_config(argv: list[str]) -> bool:
    return any(a == "--config" or a.startswith("--config=") for a in argv)


def _run_config(argv: list[str], usage: str | None = None) -> None:
    """absl app.run of ptjax.commands.main on argv (argv[0]: the program name)."""
    import functools

    from absl import app

    from ptjax import cli, commands
    from ptjax.hostmem import restart_with_huge_pages

    restart_with_huge_pages()  # first: it replaces the process (ptjax/hostmem.py)
    # ml_collections finds --config.a.b overrides in sys.argv itself, so the rewritten command
    # line must be sys.argv.
    sys.argv = with_packaged_configs(argv)
    app.run(commands.main, argv=sys.argv,
            flags_parser=functools.partial(cli.parse_flags, usage=usage or commands.__doc__))


def _eval(argv: list[str]) -> None:
    usage = "ptjax eval EXPORT --workdir DIR [--config.a.b=value ...]\n\n" + __doc__
    if not argv or argv[0].startswith("-"):
        if any(a in ("-h", "--help") for a in argv):
            _run_config(["ptjax eval", "--help"], usage)
        _fail("ptjax eval needs the export folder first: ptjax eval RUN/export --workdir DIR")
    export, rest = argv[0], argv[1:]
    config = [] if _has_config(rest) else ["--config", str(CONFIGS_DIR / "base.py")]
    _run_config(["ptjax eval", *config, *rest, "--config.mode=eval", f"--config.restore={export}"], usage)


def _list(argv: list[str]) -> None:
    what = argv[0] if argv else ""
    if what not in ("configs", "tasks"):
        _fail(f"ptjax list {what!r}: say `ptjax list configs` or `ptjax list tasks`")
    entries = list_configs() if what == "configs" else list_tasks()
    width = max(len(name) for name, _ in entries)
    for name, description in entries:
        print(f"{name:<{width}}  {description}")


def _fail(message: str) -> None:
    from ptjax import cli

    cli.fail(message)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else ""
    if command in ("", "-h", "--help", "help"):
        print(__doc__.strip())
        sys.exit(0 if command else 2)
    if command == "list":
        return _list(argv[1:])
    if command == "eval":
        return _eval(argv[1:])
    if command == "plan":
        return _run_config(["ptjax plan", *argv[1:], "--config.mode=plan"])
    if command == "serve":
        from absl import app

        from ptjax import cli, serve
        from ptjax.hostmem import restart_with_huge_pages

        restart_with_huge_pages()
        sys.argv = ["ptjax serve", *with_packaged_configs(argv[1:])]
        return app.run(serve.main, argv=sys.argv,
                       flags_parser=lambda args: cli.parse_flags(args, usage=serve.__doc__))
    if command == "generate":
        from ptjax.generate import main as generate_main
        from ptjax.hostmem import restart_with_huge_pages

        restart_with_huge_pages()
        sys.exit(generate_main(argv[1:]))
    if command in ("export-peft", "import-peft"):
        from ptjax.interop.__main__ import main as interop_main

        sys.exit(interop_main([command.split("-")[0], *argv[1:]]))
    if command.startswith("-"):
        return _run_config(["ptjax", *argv])
    _fail(f"unknown command {command!r} (commands: {', '.join(SUBCOMMANDS)}, or --config FILE; "
          "see ptjax --help)")
