"""vsegcli.io.video: probe, FrameReader, VideoWriter against tiny synthetic videos."""
from __future__ import annotations

import subprocess
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from videogen import (
    FFMPEG,
    audio_duration,
    audio_peak_db,
    container_duration,
    container_info,
    count_packets,
    frame_index,
    make_images,
    make_video,
    pattern_frame,
    vfr_times,
)
from vsegcli.errors import VsegError
from vsegcli.io.video import (
    DEFAULT_IMAGE_FPS,
    FrameReader,
    VideoWriter,
    list_images,
    output_fps,
    probe,
    start_time,
)

BIKES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / "bikes.mp4"


def read_all(path, **kw) -> list[tuple[int, np.ndarray]]:
    with FrameReader(path, **kw) as r:
        return list(r)


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def write_video(path, frames, fps, **kw) -> Path:
    h, w = frames[0].shape[:2]
    with VideoWriter(path, w, h, fps, **kw) as wr:
        for f in frames:
            wr.write(f)
    return Path(path)


@pytest.fixture(scope="module")
def vids(tmp_path_factory) -> dict[str, Path]:
    """Every test video of this module, made once (each is a few KB)."""
    d = tmp_path_factory.mktemp("vids")
    return {
        "v30": make_video(d / "v30.mp4", 64, 48, 30, fps=10),
        "rot90": make_video(d / "rot90.mp4", 64, 32, 4, fps=10, rotate=90),
        "rot270": make_video(d / "rot270.mp4", 64, 32, 4, fps=10, rotate=-90),
        "odd": make_video(d / "odd.mp4", 321, 241, 3, fps=10),
        "vfr": make_video(d / "vfr.mp4", 64, 48, 20, fps=20, vfr=True),
        "one": make_video(d / "one.mp4", 32, 32, 1, fps=25),
        # 1 s of video, 2 s of audio that is silent for its first 0.5 s
        "audio": make_video(d / "audio.mp4", 64, 48, 10, fps=10, audio=True, audio_duration=2.0,
                            audio_silent_until=0.5),
    }


# -------------------------------------------------------------------------------------- probe


def test_probe_basic(vids):
    info = probe(vids["v30"])
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(10.0)
    assert info.num_frames == 30
    assert info.duration == pytest.approx(3.0, abs=0.01)
    assert not info.has_audio and info.rotation == 0
    assert not info.is_image_folder and info.source_codec == "h264"


def test_probe_counts_video_frames_not_container_length(vids):
    # The container lasts 2 s (audio) but the video has 10 frames.
    info = probe(vids["audio"])
    assert info.has_audio
    assert info.num_frames == 10
    # Without the packet count the estimate is duration * fps: a progress-bar guess.
    assert probe(vids["v30"], count_frames=False).num_frames == 30


def test_read_frames_match_source(vids):
    frames = read_all(vids["v30"])
    assert [i for i, _ in frames] == list(range(30))
    for k, f in frames:
        assert f.shape == (48, 64, 3) and f.dtype == np.uint8
        assert f.flags.c_contiguous and f.flags.writeable
        assert frame_index(f) == k
        assert mean_abs(f, pattern_frame(k, 64, 48)) < 3


def test_hwaccel_auto_gives_the_same_frames_or_falls_back(vids):
    """-hwaccel cuda: NVDEC where ffmpeg can open a CUDA device, else (auto) software decoding with
    the reason kept; the frames are the same either way. `cuda` alone is GPU or a clear error."""
    software = read_all(vids["v30"])
    reader = FrameReader(vids["v30"], hwaccel="auto")
    assert reader.decoder in ("cuda", "software")
    if reader.decoder == "software":
        assert reader.hwaccel_fallback and "cuda" in reader.hwaccel_fallback.lower()
    got = list(reader)
    assert [i for i, _ in got] == [i for i, _ in software]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, software))
    assert FrameReader(vids["v30"]).decoder == "software"  # the library default is software
    if reader.decoder == "software":
        with pytest.raises(VsegError, match=r"hwaccel cuda\) failed \(.*[Cc][Uu][Dd][Aa]"):
            FrameReader(vids["v30"], hwaccel="cuda")
    with pytest.raises(VsegError, match="hwaccel must be one of"):
        FrameReader(vids["v30"], hwaccel="nvdec")


def test_single_frame_video(vids):
    frames = read_all(vids["one"])
    assert len(frames) == 1 and frames[0][0] == 0
    assert probe(vids["one"]).num_frames == 1


@pytest.mark.parametrize(
    "start,max_frames,stride,expected",
    [
        (0, None, 1, list(range(30))),
        (5, None, 1, list(range(5, 30))),
        (0, 4, 1, [0, 1, 2, 3]),
        (0, None, 7, [0, 7, 14, 21, 28]),
        (3, 4, 5, [3, 8, 13, 18]),
        (29, None, 3, [29]),
        (10, 100, 10, [10, 20]),
    ],
)
def test_start_max_frames_stride(vids, start, max_frames, stride, expected):
    with FrameReader(vids["v30"], start=start, max_frames=max_frames, stride=stride) as r:
        assert r.info.num_frames == len(expected)
        got = list(r)
    assert [i for i, _ in got] == expected
    assert [frame_index(f) for _, f in got] == expected  # the right pixels, not just labels


def test_start_past_end_is_a_user_error(vids):
    with FrameReader(vids["v30"], start=40) as r:
        assert r.info.num_frames == 0
        with pytest.raises(VsegError, match="smaller start"):
            list(r)


@pytest.mark.parametrize("kw", [{"start": -1}, {"stride": 0}, {"max_frames": 0}])
def test_bad_selection_arguments(vids, kw):
    with pytest.raises(VsegError):
        FrameReader(vids["v30"], **kw)


def test_close_early_stops_ffmpeg(vids):
    t = time.monotonic()
    with FrameReader(vids["v30"]) as r:
        for i, _ in r:
            if i == 2:
                break
    assert time.monotonic() - t < 3


def test_close_from_another_thread_stops_iteration(vids):
    r = FrameReader(vids["v30"])
    got: list[int] = []

    def consume() -> None:
        for i, _ in r:
            got.append(i)
            time.sleep(0.02)

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.1)
    r.close()
    t.join(5)
    assert not t.is_alive() and 0 < len(got) < 30


def test_iterate_twice_is_refused(vids):
    r = FrameReader(vids["one"])
    list(r)
    with pytest.raises(RuntimeError):
        iter(r)
    r.close()


# ----------------------------------------------------------------------------------- rotation


@pytest.mark.parametrize("key,rotation,k", [("rot90", 90, 1), ("rot270", 270, -1)])
def test_rotation_is_applied(vids, key, rotation, k):
    # Stored 64x32 with a display matrix: frames arrive as 32x64, pixels rotated.
    info = probe(vids[key])
    assert info.rotation == rotation
    assert (info.width, info.height) == (32, 64)
    frames = read_all(vids[key])
    assert len(frames) == 4
    for idx, f in frames:
        assert f.shape == (64, 32, 3)
        expected = np.rot90(pattern_frame(idx, 64, 32), k)  # ffmpeg: positive = counter-clockwise
        assert mean_abs(f, expected) < 4
        assert mean_abs(f, np.rot90(expected, 2)) > 20  # and not the other way round


# ------------------------------------------------------------------------- variable frame rate


def test_vfr_true_frames_and_duration(vids, tmp_path):
    src = vids["vfr"]
    info = probe(src)
    frames = read_all(src)
    # passthrough: the 20 real frames in order, no duplicates (a CFR read would give ~29)
    assert [frame_index(f) for _, f in frames] == list(range(20))
    assert info.duration == pytest.approx(vfr_times(20, 20)[-1], abs=0.02)
    out = write_video(tmp_path / "o.mp4", [f for _, f in frames], output_fps(info))
    assert count_packets(out) == 20
    assert abs(container_duration(out) - container_duration(src)) <= 1 / info.fps


# ----------------------------------------------------------------------------------- writing


def test_written_video_count_duration_and_content(tmp_path):
    frames = [pattern_frame(k, 64, 48) for k in range(12)]
    out = write_video(tmp_path / "o.mp4", frames, 12.0)
    assert count_packets(out) == 12
    assert container_duration(out) == pytest.approx(1.0, abs=0.01)
    text = container_info(out)
    assert "h264" in text and "yuv420p" in text
    back = read_all(out)
    assert [frame_index(f) for _, f in back] == list(range(12))
    assert all(mean_abs(f, frames[k]) < 3 for k, f in back)


def test_ntsc_rate_is_exact(tmp_path):
    out = write_video(tmp_path / "o.mp4", [pattern_frame(k, 32, 32) for k in range(30)], 30000 / 1001)
    info = probe(out)
    assert info.fps == pytest.approx(30000 / 1001, rel=1e-9)
    assert container_duration(out) == pytest.approx(30 * 1001 / 30000, abs=0.011)


def test_stride_output_keeps_duration(vids, tmp_path):
    src = vids["v30"]
    with FrameReader(src, stride=3) as r:
        info = r.info
        frames = [f for _, f in r]
    assert output_fps(info, 3) == pytest.approx(10 / 3)
    out = write_video(tmp_path / "o.mp4", frames, output_fps(info, 3))
    assert abs(container_duration(out) - 3.0) <= 3 / 10 + 1e-6  # within one output frame


def test_odd_size_is_padded_not_scaled(vids, tmp_path):
    frames = read_all(vids["odd"])
    assert frames[0][1].shape == (241, 321, 3)
    with VideoWriter(tmp_path / "o.mp4", 321, 241, 10) as w:
        assert w.padded_size == (322, 242)
        for _, f in frames:
            w.write(f)
    info = probe(tmp_path / "o.mp4")
    assert (info.width, info.height) == (322, 242)
    back = read_all(tmp_path / "o.mp4")
    for (_, src), (_, got) in zip(frames, back):
        assert mean_abs(got[:241, :321], src) < 3
        # the extra column/row repeat the last ones
        assert mean_abs(got[:241, 321], src[:, 320]) < 4
        assert mean_abs(got[241, :321], src[240]) < 4


def test_wrong_frame_shape_is_a_bug_not_a_user_error(tmp_path):
    w = VideoWriter(tmp_path / "o.mp4", 32, 32, 10)
    with pytest.raises(ValueError):
        w.write(np.zeros((32, 30, 3), np.uint8))
    with pytest.raises(ValueError):
        w.write(np.zeros((32, 32, 3), np.float32))
    w.abort()


@pytest.mark.parametrize("quality", [0, 11])
def test_bad_quality(tmp_path, quality):
    with pytest.raises(VsegError):
        VideoWriter(tmp_path / "o.mp4", 32, 32, 10, quality=quality)


def test_bad_output_extension(tmp_path):
    with pytest.raises(VsegError, match=".mp4"):
        VideoWriter(tmp_path / "o.avi", 32, 32, 10)


# ------------------------------------------------------------------------- atomic / temp files


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_temp_name_until_close(tmp_path):
    out = tmp_path / "out.mp4"
    w = VideoWriter(out, 32, 32, 10)
    w.write(pattern_frame(0, 32, 32))
    deadline = time.monotonic() + 5
    while not _listing(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.02)  # ffmpeg opens its output once the encoder has started
    assert not out.exists()
    names = _listing(tmp_path)
    assert len(names) == 1 and names[0].startswith(".out.mp4.part") and names[0].endswith(".mp4")
    assert w.close() == out
    assert _listing(tmp_path) == ["out.mp4"]
    assert w.close() == out  # idempotent


def test_abort_leaves_nothing(tmp_path):
    w = VideoWriter(tmp_path / "out.mp4", 32, 32, 10)
    for k in range(3):
        w.write(pattern_frame(k, 32, 32))
    w.abort()
    w.abort()
    assert _listing(tmp_path) == []
    with pytest.raises(RuntimeError):
        w.write(pattern_frame(0, 32, 32))


def test_exception_inside_with_leaves_nothing(tmp_path, vids):
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(tmp_path / "out.mp4", 64, 48, 10, audio_source=vids["audio"]) as w:
            w.write(pattern_frame(0, 64, 48))
            raise KeyboardInterrupt
    assert _listing(tmp_path) == []


def test_close_without_frames_is_an_error_and_leaves_nothing(tmp_path):
    w = VideoWriter(tmp_path / "out.mp4", 32, 32, 10)
    with pytest.raises(VsegError, match="no frames"):
        w.close()
    assert _listing(tmp_path) == []


def test_existing_output_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"old")
    with pytest.raises(VsegError, match="overwrite"):
        VideoWriter(out, 32, 32, 10)
    assert out.read_bytes() == b"old"
    write_video(out, [pattern_frame(0, 32, 32)], 10, overwrite=True)
    assert probe(out).num_frames == 1
    assert _listing(tmp_path) == ["out.mp4"]


def test_refuses_to_write_onto_the_input(tmp_path, vids):
    src = tmp_path / "in.mp4"
    src.write_bytes(vids["one"].read_bytes())
    for kw in ({"audio_source": src}, {"source": src}):
        with pytest.raises(VsegError, match="input"):
            VideoWriter(tmp_path / "." / "in.mp4", 32, 32, 10, overwrite=True, **kw)
    assert src.read_bytes() == vids["one"].read_bytes()


def test_output_folder_is_created(tmp_path):
    out = write_video(tmp_path / "a" / "b" / "o.mp4", [pattern_frame(0, 32, 32)], 10)
    assert out.is_file()


def test_output_folder_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(VsegError, match="folder"):
        VideoWriter(tmp_path / "file" / "o.mp4", 32, 32, 10)


def test_output_path_that_is_a_folder(tmp_path):
    (tmp_path / "x.mp4").mkdir()
    with pytest.raises(VsegError, match="folder"):
        VideoWriter(tmp_path / "x.mp4", 32, 32, 10, overwrite=True)


def test_no_ffmpeg_noise_on_the_terminal(vids, tmp_path, capfd):
    read_all(vids["rot90"])  # rotation used to trigger imageio-ffmpeg's size warning
    write_video(tmp_path / "o.mp4", [pattern_frame(0, 33, 33)], 10, audio_source=vids["audio"])
    with pytest.raises(VsegError):
        probe(tmp_path / "nope.mp4")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# ------------------------------------------------------------------------------------- audio


def test_audio_is_muxed_trimmed_and_offset(vids, tmp_path):
    src = vids["audio"]  # audio: silent 0..0.5 s, tone 0.5..2 s
    frames = [pattern_frame(k, 64, 48) for k in range(5)]  # 0.5 s at 10 fps
    out = write_video(tmp_path / "o.mp4", frames, 10, audio_source=src, audio_start=0.5)
    info = probe(out)
    assert info.has_audio
    assert "aac" in container_info(out)
    assert audio_duration(out) == pytest.approx(0.5, abs=0.05)  # cut to the video
    assert container_duration(out) == pytest.approx(0.5, abs=0.05)
    assert count_packets(out) == 5
    assert audio_peak_db(out, 0.0, 0.2) > -20  # starts at the tone: audio_start honoured

    out0 = write_video(tmp_path / "o0.mp4", frames, 10, audio_source=src)
    assert audio_peak_db(out0, 0.0, 0.4) < -60  # from 0 s: the silent part


def test_start_time_helper(vids):
    assert start_time(probe(vids["v30"]), 5) == pytest.approx(0.5)


def test_non_mp4_audio_is_encoded_to_aac(tmp_path):
    src = make_video(tmp_path / "pcm.mkv", 32, 32, 5, fps=10, audio=True, audio_codec="pcm_s16le")
    assert "pcm_s16le" in container_info(src)
    out = write_video(tmp_path / "o.mp4", [pattern_frame(k, 32, 32) for k in range(5)], 10,
                      audio_source=src)
    text = container_info(out)
    assert "Audio: aac" in text and "pcm" not in text


def test_silent_source_gives_silent_output(vids, tmp_path):
    out = write_video(tmp_path / "o.mp4", [pattern_frame(0, 64, 48)], 10, audio_source=vids["v30"])
    assert not probe(out).has_audio


def test_audio_start_after_audio_end_gives_silent_output(vids, tmp_path):
    out = write_video(tmp_path / "o.mp4", [pattern_frame(0, 64, 48)], 10, audio_source=vids["audio"],
                      audio_start=5.0)
    assert not probe(out).has_audio


# ------------------------------------------------------------------------------ image folders


def test_image_folder_natural_order(tmp_path):
    names = ["frame1.png", "frame2.png", "frame3.bmp", "frame10.png", "frame11.jpg", "frame20.PNG"]
    make_images(tmp_path / "imgs", names)
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    (tmp_path / "imgs" / "._frame5.png").write_bytes(b"macOS junk")
    assert [p.name for p in list_images(tmp_path / "imgs")] == names
    info = probe(tmp_path / "imgs")
    assert info.is_image_folder and info.num_frames == 6
    assert (info.width, info.height) == (32, 24) and info.fps == DEFAULT_IMAGE_FPS
    frames = read_all(tmp_path / "imgs")
    assert [i for i, _ in frames] == list(range(6))
    for i, f in frames:
        assert f.shape == (24, 32, 3) and f.flags.c_contiguous
        if names[i].lower().endswith((".png", ".bmp")):
            assert np.array_equal(f, pattern_frame(i, 32, 24))  # lossless, RGB order
        assert frame_index(f) == i


def test_image_folder_selection(tmp_path):
    names = [f"{k:03d}.png" for k in range(10)]
    make_images(tmp_path, names)
    with FrameReader(tmp_path, start=1, stride=3, max_frames=2) as r:
        assert r.info.num_frames == 2
        got = list(r)
    assert [i for i, _ in got] == [1, 4]
    assert [frame_index(f) for _, f in got] == [1, 4]


def test_image_folder_mixed_sizes_names_the_file(tmp_path):
    make_images(tmp_path, ["a1.png", "a2.png", "a3.png"], sizes={"a2.png": (20, 24)})
    with pytest.raises(VsegError, match="a2.png"):
        read_all(tmp_path)


def test_image_folder_broken_image(tmp_path):
    make_images(tmp_path, ["a1.png"])
    (tmp_path / "a2.png").write_bytes(b"not a png")
    with pytest.raises(VsegError, match="a2.png"):
        read_all(tmp_path)


# -------------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    with pytest.raises(VsegError, match="does not exist"):
        FrameReader(tmp_path / "nope.mp4")


def test_text_file_named_mp4(tmp_path):
    p = tmp_path / "fake.mp4"
    p.write_text("hello, this is not a video\n" * 10)
    with pytest.raises(VsegError, match="not a video"):
        probe(p)


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.touch()
    with pytest.raises(VsegError, match="empty"):
        FrameReader(p)


def test_truncated_without_index_fails(vids, tmp_path):
    # Plain ffmpeg mp4s keep their index (moov) at the end: a cut file cannot be opened.
    data = vids["v30"].read_bytes()
    p = tmp_path / "cut.mp4"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(VsegError, match="truncated"):
        read_all(p)


def test_truncated_with_index_first_reads_the_prefix(tmp_path):
    src = make_video(tmp_path / "fs.mp4", 64, 48, 30, fps=10, faststart=True)
    data = src.read_bytes()
    p = tmp_path / "cut.mp4"
    p.write_bytes(data[: int(len(data) * 0.6)])
    frames = read_all(p)
    assert 0 < len(frames) < 30
    assert [frame_index(f) for _, f in frames] == list(range(len(frames)))


def test_undecodable_payload_fails(vids, tmp_path):
    # Valid container, garbage where the frames should be.
    data = bytearray(vids["v30"].read_bytes())
    idx = data.find(b"mdat")
    rng = np.random.default_rng(1)
    data[idx + 8 : len(data) - 2000] = rng.integers(0, 256, len(data) - 2000 - idx - 8, np.uint8).tobytes()
    p = tmp_path / "garbage.mp4"
    p.write_bytes(bytes(data))
    try:
        frames = read_all(p)
    except VsegError:
        return
    # ffmpeg may conceal errors and still output frames; then they must be whole frames.
    assert all(f.shape == (48, 64, 3) for _, f in frames)


def test_audio_only_file_has_no_video(tmp_path):
    p = tmp_path / "a.wav"
    subprocess.run([FFMPEG, "-y", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=duration=0.2", str(p)], check=True, capture_output=True)
    with pytest.raises(VsegError, match="no video stream"):
        probe(p)


def test_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(VsegError, match="no images"):
        FrameReader(tmp_path)


# --------------------------------------------------------------------------------- real clip


@pytest.mark.skipif(not BIKES.exists(), reason="../shared/data/videos/bikes.mp4 absent")
def test_real_clip_bikes():
    info = probe(BIKES)
    assert (info.width, info.height) == (640, 272)
    assert info.fps == pytest.approx(25.0)
    assert abs(info.num_frames - 250) <= 2
    frames = read_all(BIKES, start=100, max_frames=3, stride=2)
    assert [i for i, _ in frames] == [100, 102, 104]
    assert all(f.shape == (272, 640, 3) and f.std() > 5 for _, f in frames)


@pytest.mark.skipif(not BIKES.exists(), reason="../shared/data/videos/bikes.mp4 absent")
def test_real_clip_streams_in_constant_memory():
    # All 250 frames (~0.5 s): Python memory never holds more than a few frames at once.
    frame_bytes = 640 * 272 * 3
    tracemalloc.start()
    try:
        n = 0
        with FrameReader(BIKES) as r:
            for _ in r:
                n += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 250
    assert peak < 8 * frame_bytes


def test_closing_a_decoder_leaves_no_crashed_log_thread():
    """Closing a decoder while its log thread is blocked reading ffmpeg's stderr (what leaving a
    video early does) must end that thread cleanly: closing the pipe under its readline crashed it
    with a ValueError. A child that keeps logging stands in for ffmpeg."""
    import threading
    import time

    from vsegcli.io.video.reader import _DecoderProcess

    # ffmpeg stand-in whose log outlives it: a background loop keeps the stderr pipe open after the
    # process itself is killed, so the log thread is still blocked in readline when close() runs.
    chatty = ["sh", "-c", "while true; do echo 'frame= 1' >&2; sleep 0.01; done & sleep 30"]
    crashes: list[BaseException] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: crashes.append(args.exc_value)
    try:
        for _ in range(2):
            proc = _DecoderProcess(chatty, stdin_source=False)
            time.sleep(0.2)  # the log thread is reading
            proc.close()
            proc._log_thread.join(timeout=5)
            assert not proc._log_thread.is_alive()
    finally:
        threading.excepthook = previous
    assert crashes == []


def test_ffmpeg_env_sets_gconv_path_unless_the_user_did(monkeypatch):
    """The environment our ffmpeg processes get (io.video.ffmpeg.ffmpeg_env; static ffmpeg 7.0
    builds crash on MPEG-TS without GCONV_PATH, tests/test_sources.py streams TS through them): a
    value the user set is theirs and stays."""
    import os
    import sys

    from vsegcli.io.video.ffmpeg import ffmpeg_env

    monkeypatch.delenv("GCONV_PATH", raising=False)
    env = ffmpeg_env()
    if sys.platform.startswith("linux"):
        assert env is not None and env["GCONV_PATH"] == os.devnull and env["PATH"] == os.environ["PATH"]
    monkeypatch.setenv("GCONV_PATH", "/opt/my-gconv")
    assert ffmpeg_env() is None  # ffmpeg inherits ours, the user's GCONV_PATH included
