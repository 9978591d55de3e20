"""Environment variables that make every simulator render and run without a screen or network."""

from __future__ import annotations

import os
import shutil

# MuJoCo reads MUJOCO_GL when it is first imported, so this must run before any
# `import mujoco`; importing `gea_envs` does it.
_DEFAULTS = {
    "MUJOCO_GL": "egl",
    # Selenium Manager otherwise tries to download a matching chromedriver.
    "SE_OFFLINE": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def configure_headless() -> None:
    """Set headless-rendering and offline defaults, keeping any value the user already set."""
    for key, value in _DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    chromedriver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    os.environ.setdefault("MINIWOB_CHROME_BINARY", chromium)
    os.environ.setdefault("MINIWOB_CHROMEDRIVER", chromedriver)
