"""Test setup: make `tests/` importable (``from videogen import ...``) and share tiny videos."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))


@pytest.fixture(scope="session")
def tiny_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64x48, 10 frames at 10 fps, no audio; frame k shows `videogen.pattern_frame(k, ...)`."""
    from videogen import make_video

    return make_video(tmp_path_factory.mktemp("videos") / "tiny.mp4", 64, 48, 10, fps=10)


@pytest.fixture(scope="session")
def tiny_video_audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64x48, 10 frames at 10 fps with a 1 s AAC sine track."""
    from videogen import make_video

    return make_video(tmp_path_factory.mktemp("videos") / "tiny_audio.mp4", 64, 48, 10, fps=10,
                      audio=True)


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for CPU-heavy test modules: other test runs share the two cores, and
    one thread keeps reductions in a fixed order. Restores the setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
