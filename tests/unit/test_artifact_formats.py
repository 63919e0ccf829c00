"""Model artifacts load only from safetensors and ONNX, never from pickle.

Two guards: no source file of ours calls a pickle-based loader, and a version
folder that carries pickle weights (``model.pt``) instead of safetensors is
refused by both the registry check and the loader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from recstream.inference.model_dir import WEIGHTS, load_model_dir, save_model_dir
from recstream.inference.registry import ArtifactError, Registry, verify_version_dir, write_manifest
from test_backends_support import small_model

ROOT = Path(__file__).resolve().parents[2]
#: Our packages. ``tests/`` is left out: tests may write pickles on purpose (as
#: below) to check that they are refused. ``bench/recbole_peers.py`` is scanned
#: too: it keeps RecBole's best state in memory (RecBole's own checkpoint files,
#: written and read by the library, never reach a scorer).
PACKAGES = ("schemas", "stream", "inference", "trainer", "recstream", "bench")
#: module -> functions that unpickle (run arbitrary code from a file).
UNSAFE = {
    "torch": {"load"},
    "pickle": {"load", "loads", "Unpickler"},
    "cPickle": {"load", "loads"},
    "dill": {"load", "loads"},
    "cloudpickle": {"load", "loads"},
    "joblib": {"load"},
    "pandas": {"read_pickle"},
    "shelve": {"open"},
}


def _unsafe_calls(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    aliases: dict[str, str] = {}  # local name -> module (import torch as t)
    direct: dict[str, str] = {}  # local name -> "module.func" (from pickle import loads)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module in UNSAFE:
            for a in node.names:
                if a.name in UNSAFE[node.module]:
                    direct[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = None
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            module = aliases.get(f.value.id, f.value.id)
            if f.attr in UNSAFE.get(module, ()):
                name = f"{module}.{f.attr}"
            elif module in ("numpy", "np") and f.attr == "load":
                pickled = [k for k in node.keywords if k.arg == "allow_pickle"]
                if pickled and not (
                    isinstance(pickled[0].value, ast.Constant) and pickled[0].value.value is False
                ):
                    name = "numpy.load(allow_pickle=...)"
        elif isinstance(f, ast.Name) and f.id in direct:
            name = direct[f.id]
        if name:
            found.append(f"{path.relative_to(root)}:{node.lineno}: {name}")
    return found


def test_no_source_loads_pickle() -> None:
    sources = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(sources) > 50  # the scan really looked at the packages
    found = [hit for p in sources for hit in _unsafe_calls(p)]
    assert not found, "pickle-based loads (use safetensors/ONNX):\n" + "\n".join(found)


def test_the_scan_catches_the_usual_spellings(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import torch as t\nimport pickle\nimport numpy as np\n"
        "from joblib import load as jl\n"
        "t.load('m.pt')\npickle.loads(b'')\njl('x')\nnp.load('a.npy', allow_pickle=True)\n"
        "np.load('ok.npy')\n"
    )
    hits = _unsafe_calls(bad, tmp_path)
    assert [h.split(": ", 1)[1] for h in hits] == [
        "torch.load",
        "pickle.loads",
        "joblib.load",
        "numpy.load(allow_pickle=...)",
    ]


def _published(tmp_path: Path) -> Path:
    reg = Registry(tmp_path / "registry")
    model = small_model(seed=0, steps=1)
    staged = reg.staging_dir()
    save_model_dir(staged, model, [f"i{i}" for i in range(model.cfg.n_items)], {})
    return Path(reg.publish(staged).path)


def test_a_pickle_model_pt_instead_of_safetensors_is_refused(tmp_path: Path) -> None:
    folder = _published(tmp_path)
    verify_version_dir(folder)  # the genuine folder passes
    state = load_model_dir(folder).model.state_dict()
    (folder / WEIGHTS).unlink()
    torch.save(state, folder / "model.pt")  # a pickle, the usual torch checkpoint
    version = folder.name
    # Re-sealed, as a careless or hostile publisher would: checksums all match.
    write_manifest(folder, version)
    with pytest.raises(ArtifactError) as e:
        verify_version_dir(folder)
    assert e.value.reason == "unsafe_format" and "model.pt" in str(e.value)
    with pytest.raises(FileNotFoundError, match=WEIGHTS):
        load_model_dir(folder)


def test_an_unlisted_pickle_beside_good_weights_is_refused(tmp_path: Path) -> None:
    folder = _published(tmp_path)
    (folder / "extra.pkl").write_bytes(b"\x80\x04N.")  # pickle of None
    with pytest.raises(ArtifactError) as e:
        verify_version_dir(folder)
    assert e.value.reason == "unsafe_format"


def test_a_manifest_without_safetensors_weights_is_refused(tmp_path: Path) -> None:
    folder = _published(tmp_path)
    (folder / WEIGHTS).unlink()
    write_manifest(folder, folder.name)
    with pytest.raises(ArtifactError) as e:
        verify_version_dir(folder)
    assert e.value.reason == "missing" and WEIGHTS in str(e.value)
