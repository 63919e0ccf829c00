"""The built wheel installs one import name, recstream, and its subpackages import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_the_wheel_provides_only_recstream(tmp_path: Path) -> None:
    # Built from a copy: setuptools leaves build/ and egg-info beside the sources.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ].values():
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(src)],
        check=True, cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("recstream-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"recstream"}
    names = zipfile.ZipFile(wheel).namelist()
    assert "recstream/stream/worker.py" in names
    assert "recstream/schemas/json/event.schema.json" in names
    assert "recstream/dashboard_static/index.html" in names

    # A fresh venv with the wheel alone; its dependencies come from ours on
    # PYTHONPATH (site-packages only: our editable finder is not loaded there).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         str(wheel)],
        check=True,
    )
    site = Path(subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip())
    ours = {p.name for p in site.iterdir() if not p.name.endswith(".dist-info")}
    assert ours == {"recstream"}
    code = (
        "import recstream.schemas, recstream.stream.worker, recstream.inference.model, "
        "recstream.trainer.train, recstream.bench.stream, recstream.cli\n"
        "import importlib.util as u, pathlib\n"
        "assert all(u.find_spec(n) is None for n in ('schemas', 'stream', 'inference', 'trainer', 'bench'))\n"
        "print(pathlib.Path(recstream.stream.__file__).parent.parent.parent.name)"
    )
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    out = subprocess.run([python, "-c", code], env=env, cwd=tmp_path, check=True,
                         capture_output=True, text=True)
    assert out.stdout.strip() == "site-packages"
