"""`pip install .`: the wheel holds the package, its configs and data, the `ptjax` entry point
and the pinned dependencies; the extras match the requirement files; `ptjax list` and --help."""

import configparser
import email
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from ptjax import console
from ptjax.tasks import get_task, task_names

REPO = Path(__file__).resolve().parents[1]


def pins(path: Path) -> list[str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("-")]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel `pip wheel --no-deps` builds from a copy of the checkout (the build's own
    folders stay out of the working tree)."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(REPO / name, source / name)
    for name in ("ptjax", "configs"):
        shutil.copytree(REPO / name, source / name, symlinks=True, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(root / "dist"), str(source)], check=True, timeout=300, capture_output=True)
    (built,) = (root / "dist").glob("ptjax-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_holds_package_configs_data_and_entry_point(wheel):
    names = set(wheel.namelist())
    tracked = {str(p.relative_to(REPO)) for p in (REPO / "ptjax").rglob("*.py")
               if "__pycache__" not in p.parts and "configs" not in p.parts}
    assert tracked <= names, f"not in the wheel (a folder without __init__.py?): {sorted(tracked - names)}"
    assert {f"ptjax/configs/{p.name}" for p in (REPO / "configs").glob("*.py")} <= names
    data = {str(p.relative_to(REPO)) for p in (REPO / "ptjax" / "tasks" / "data").rglob("*") if p.is_file()}
    assert data and data <= names
    assert {n.split("/")[0] for n in names} == {"ptjax", "ptjax-0.1.0.dist-info"}  # no stray top level
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    assert parser["console_scripts"]["ptjax"] == "ptjax.console:main"
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    message = email.message_from_bytes(wheel.read(metadata))
    requires = message.get_all("Requires-Dist")
    assert [r for r in requires if "extra ==" not in r] == pins(REPO / "requirements.txt")
    assert not any(r.startswith("torch") for r in requires if "extra ==" not in r)  # a test reference only
    assert set(message.get_all("Provides-Extra")) == {"test", "gpu", "tpu"}


def test_extras_match_the_requirement_files():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert extras["test"] == pins(REPO / "requirements-test.txt")
    (jax,) = [p for p in pins(REPO / "requirements.txt") if p.startswith("jax==")]
    version = jax.split("==")[1]
    assert extras["gpu"] == [f"jax[cuda12]=={version}"] and extras["tpu"] == [f"jax[tpu]=={version}"]


def test_list_tasks_and_configs(capsys):
    console.main(["list", "tasks"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == task_names()
    rte = next(line for line in lines if line.startswith("rte "))
    assert rte.split(None, 1)[1] == f"classification: {get_task('rte').description}"
    console.main(["list", "configs"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == sorted(p.stem for p in (REPO / "configs").glob("*.py")
                                                         if p.stem != "__init__")
    assert all(len(line.split(None, 1)) == 2 for line in lines)  # every config has its description


def test_config_names_resolve_to_packaged_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # away from the checkout's configs/
    packaged = console.CONFIGS_DIR / "lama_paper.py"
    assert console.resolve_config_path("configs/lama_paper.py:manual") == f"{packaged}:manual"
    assert console.resolve_config_path("lama_paper") == str(packaged)
    assert console.resolve_config_path("mine.py") == "mine.py"  # not packaged: left for the error


@pytest.mark.parametrize("command", [["main.py", "--help"], ["-m", "ptjax", "--help"],
                                     ["-m", "ptjax", "--config", "quickstart", "--help"]])
def test_help_exits_0(command):
    proc = subprocess.run([sys.executable, *command], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "--config" in proc.stdout
