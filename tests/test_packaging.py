"""A plain (non-editable) install must carry the profiles and the presets' config documents,
and run without the repository."""

import os
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT

pytest.importorskip("hatchling")


def test_wheel_ships_profiles_and_finds_them(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), "-q"], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("llmbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n for n in names if n.startswith("llmbench/profiles/"))
    assert shipped == [f"llmbench/profiles/{p}.toml"
                       for p in ("cpu", "sm100", "sm120", "sm70", "sm75", "sm80", "sm86",
                                 "sm89", "sm90")]
    from llmbench.models.presets import PRESETS

    assert sorted(n for n in names if n.startswith("llmbench/models/hf_configs/")) == \
        sorted(f"llmbench/models/hf_configs/{p}.json" for p in PRESETS)

    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target),
         str(wheel), "-q"], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    code = ("import llmbench.core.profiles as p; d = p.profiles_dir(); "
            "print(d); print(sorted(p.shipped_profiles()))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    where, names = out.stdout.strip().splitlines()
    assert where == str(target / "llmbench" / "profiles")
    assert names == ("['cpu', 'sm100', 'sm120', 'sm70', 'sm75', 'sm80', 'sm86', 'sm89', "
                     "'sm90']")
    code = ("from llmbench.models import hf; c = hf.load_config('llama-3-8b'); "
            "print(c.source); print(c.param_count())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        str(target / "llmbench" / "models" / "hf_configs" / "llama-3-8b.json"), "8030261248"]
