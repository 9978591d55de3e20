"""Repository layout rules that keep Hugging Face `tokenizers` importable."""

import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_source_roots_are_not_packages():
    assert not (ROOT / "tokenizers" / "__init__.py").exists()
    assert not (ROOT / "envs" / "__init__.py").exists()


def test_transformers_finds_hf_tokenizers_from_repo_root():
    code = "import transformers, tokenizers; print(tokenizers.__file__); tokenizers.Tokenizer"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "site-packages" in result.stdout, result.stdout


def test_setup_cfg_lists_every_package():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    roots = {"gea": ROOT / "gea", "gea_envs": ROOT / "envs" / "gea_envs", "gea_tokenizers": ROOT / "tokenizers" / "gea_tokenizers"}
    found = set()
    for package, folder in roots.items():
        for init in folder.rglob("__init__.py"):
            relative = init.parent.relative_to(folder)
            found.add(".".join([package, *relative.parts]))
    assert found == listed
