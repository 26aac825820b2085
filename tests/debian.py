"""Debian programs the tests drive (Chromium, promtool): found on PATH, else installed with apt-get when the
tests run as root on Debian, else the test is skipped with the reason."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest

APT_TIMEOUT_S = 900


@functools.cache
def _apt_updated() -> bool:
    return subprocess.run(["apt-get", "update"], capture_output=True, timeout=APT_TIMEOUT_S).returncode == 0


def program(binary: str, package: str) -> str:
    """The path of `binary`, installing Debian's `package` first where it is missing; pytest.skip where it cannot."""
    if path := shutil.which(binary):
        return path
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(f"{binary} is missing and cannot be installed here (needs root and apt-get): "
                    f"apt-get install {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    try:
        done = _apt_updated() and subprocess.run(install, capture_output=True, text=True, env=env,
                                                 timeout=APT_TIMEOUT_S).returncode == 0
    except subprocess.TimeoutExpired:
        done = False
    if not done or (path := shutil.which(binary)) is None:
        pytest.skip(f"{binary} is missing and `apt-get install {package}` failed (offline?)")
    return path
