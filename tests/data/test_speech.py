"""The speech datasets: eSpeak NG build, splits, caching, crops, WAV files, ALSA clips."""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from invertible.data import (
    DatasetFormatError,
    DatasetNotFoundError,
    SpeechData,
    list_datasets,
    load_dataset,
    speech,
)
from invertible.data.speech import (
    ALSA_SOUNDS_DIR,
    AUDIO_EXTRA_HINT,
    AudioExtraMissingError,
    load_alsa_clips,
    load_speech,
    read_wav,
    write_wav,
)

TINY = {"n_prompts": 6, "variants": 2}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SpeechData:
    pytest.importorskip("espeakng_loader")
    cache = tmp_path_factory.mktemp("speech-cache")
    return load_speech(cache, cache_dir=cache, **TINY)


def test_tiny_build_shapes_and_stats(tiny: SpeechData) -> None:
    assert tiny.sample_rate == 16000
    assert (len(tiny.train), len(tiny.val), len(tiny.test)) == (8, 2, 2)
    for clips in (tiny.train, tiny.val, tiny.test):
        for c in clips:
            assert c.dtype == np.int16 and c.ndim == 1
            assert 0.5 < c.size / 16000 < 10  # a sentence lasts seconds
            assert c[0] != 0 and c[-1] != 0  # digital silence trimmed at the ends
    assert tiny.manifest["splits"]["train"]["utterances"] == 8
    assert tiny.manifest["sample_rate"] == 16000
    assert tiny.manifest["resample"] == [320, 441]


def test_splits_disjoint_by_prompt_and_hash(tiny: SpeechData) -> None:
    entries = tiny.manifest["utterances"]
    prompts = {s: {e["text"] for e in entries if e["split"] == s} for s in ("train", "val", "test")}
    assert not prompts["train"] & prompts["val"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["val"] & prompts["test"]
    hashes = [e["sha256"] for e in entries]
    assert len(set(hashes)) == len(hashes)
    # every rendering of a prompt uses a different voice
    for text in prompts["train"]:
        voices = [e["voice"] for e in entries if e["text"] == text]
        assert len(voices) == len(set(voices)) == TINY["variants"]


def test_rebuild_is_byte_identical_and_cache_is_used(tiny: SpeechData, tmp_path: Path) -> None:
    again = load_speech(tmp_path, cache_dir=tmp_path, **TINY)
    assert again.manifest["audio_sha256"] == tiny.manifest["audio_sha256"]
    for a, b in zip(tiny.train + tiny.val + tiny.test, again.train + again.val + again.test):
        assert a.tobytes() == b.tobytes()
    cached = load_speech(tmp_path, cache_dir=tmp_path, **TINY)
    assert cached.manifest["build_seconds"] == again.manifest["build_seconds"]  # not rebuilt
    assert len(list((tmp_path / "speech").glob("speech-*.npz"))) == 1
    other = load_speech(tmp_path, cache_dir=tmp_path, seed=1, **TINY)
    assert other.manifest["audio_sha256"] != tiny.manifest["audio_sha256"]


def test_train_batch_crops_and_fresh_noise(tiny: SpeechData) -> None:
    rng = np.random.default_rng(0)
    a = tiny.train_batch(16, rng)
    b = tiny.train_batch(16, rng)
    assert a.shape == (16, 8192) and a.dtype == np.float32
    assert a.min() >= -1.0 and a.max() <= 1.0
    assert not np.array_equal(a, b)  # a Generator advances: fresh crops and noise
    np.testing.assert_array_equal(tiny.train_batch(16, 7), tiny.train_batch(16, 7))
    assert tiny.train_batch(3, 7, crop=100).shape == (3, 100)
    # the integer part is a sample of the data, the fraction is U[0, 1) noise
    scaled = a.astype(np.float64) * 32768.0
    frac = scaled - np.floor(scaled)
    assert 0.45 < frac.mean() < 0.55 and frac.std() > 0.25
    # float32 may round n + u (u just below 1) up onto the next bin edge, n + 1
    flat = np.concatenate(tiny.train)
    n = np.floor(scaled[0])
    assert (np.isin(n, flat) | np.isin(n - 1, flat)).all()


def test_train_batch_rejects_too_long_crops(tiny: SpeechData) -> None:
    with pytest.raises(ValueError, match="samples long"):
        tiny.train_batch(2, 0, crop=10**7)


def test_eval_noise_is_fixed(tiny: SpeechData) -> None:
    a = tiny.eval_utterances("test")
    b = tiny.eval_utterances("test")
    assert len(a) == len(tiny.test)
    for x, y, n in zip(a, b, tiny.test):
        np.testing.assert_array_equal(x, y)
        assert x.shape == n.shape and x.dtype == np.float32
        offset = x.astype(np.float64) * 32768 - n  # the noise u, up to float32 rounding
        assert offset.min() >= 0 and offset.max() <= 1 and abs(offset.mean() - 0.5) < 0.01
    assert not np.array_equal(a[0], tiny.eval_utterances("test", seed=1)[0])
    with pytest.raises(KeyError, match="no split"):
        tiny.eval_utterances("nope")


def test_registry_lists_and_loads_speech(tmp_path: Path) -> None:
    pytest.importorskip("espeakng_loader")
    status = {s.name: s for s in list_datasets(tmp_path)}
    assert status["speech"].available and "eSpeak NG" in status["speech"].description
    assert not status["speech-wav"].available
    data = load_dataset("speech", data_dir=tmp_path, cache_dir=tmp_path, **TINY)
    assert isinstance(data, SpeechData) and data.name == "speech"
    with pytest.raises(TypeError, match="n_prompts"):
        load_dataset("speech", bogus=1)


def test_missing_espeak_gives_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # makes the import fail
    with pytest.raises(AudioExtraMissingError) as exc:
        load_speech(tmp_path, cache_dir=tmp_path, rebuild=True, **TINY)
    message = str(exc.value)
    assert AUDIO_EXTRA_HINT in message and "\n" not in message
    assert isinstance(exc.value, ImportError)
    status = {s.name: s for s in list_datasets(tmp_path)}["speech"]
    assert not status.available and AUDIO_EXTRA_HINT in status.message


def test_wav_round_trip(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(-32768, 32768, 1000).astype(np.int16)
    write_wav(tmp_path / "a.wav", x, 22050)
    y, rate = read_wav(tmp_path / "a.wav")
    assert rate == 22050 and y.dtype == np.int16
    np.testing.assert_array_equal(x, y)
    write_wav(tmp_path / "f.wav", np.array([0.0, 0.5, -1.0, 2.0]))
    np.testing.assert_array_equal(read_wav(tmp_path / "f.wav")[0], [0, 16384, -32768, 32767])


def _write_raw(path: Path, frames: np.ndarray, rate: int, channels: int, width: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames.tobytes())


def test_read_wav_mixes_channels_and_rejects_8_bit(tmp_path: Path) -> None:
    stereo = np.array([[100, 300], [-5, -6], [0, 1]], dtype="<i2")
    _write_raw(tmp_path / "s.wav", stereo, 16000, 2)
    np.testing.assert_array_equal(read_wav(tmp_path / "s.wav")[0], [200, -6, 0])
    _write_raw(tmp_path / "b.wav", np.array([1, 2, 3], np.uint8), 8000, 1, width=1)
    with pytest.raises(DatasetFormatError, match="16-bit"):
        read_wav(tmp_path / "b.wav")
    (tmp_path / "junk.wav").write_bytes(b"not a wav")
    with pytest.raises(DatasetFormatError):
        read_wav(tmp_path / "junk.wav")


def test_speech_wav_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="speech-wav"):
        load_dataset("speech-wav", data_dir=tmp_path)
    rng = np.random.default_rng(0)
    for i in range(10):
        x = (rng.normal(0, 1000, (4410, 2))).astype("<i2")
        _write_raw(tmp_path / "speech-wav" / f"spk{i % 2}" / f"u{i}.wav", x, 22050, 2)
    status = {s.name: s for s in list_datasets(tmp_path)}["speech-wav"]
    assert status.available
    a = load_dataset("speech-wav", data_dir=tmp_path, real_heldout=False)
    b = load_dataset("speech-wav", data_dir=tmp_path, real_heldout=False)
    assert (len(a.train), len(a.val), len(a.test)) == (8, 1, 1)
    assert all(c.size == 3200 for c in a.train)  # 0.2 s at 16 kHz
    assert [e["file"] for e in a.manifest["utterances"]] == [
        e["file"] for e in b.manifest["utterances"]
    ]
    files = {s: {e["file"] for e in a.manifest["utterances"] if e["split"] == s} for s in a.splits}
    assert not files["train"] & files["test"]
    c = load_dataset("speech-wav", data_dir="/nonexistent", wav_dir=tmp_path / "speech-wav")
    assert len(c.train) == 8
    assert len(load_dataset("speech-wav", data_dir=tmp_path, max_files=4).train) == 2


def test_alsa_absent_is_not_an_error(tmp_path: Path) -> None:
    assert load_alsa_clips(tmp_path / "none") == {}
    heldout, notes = speech._heldout(True, 16000)
    if not ALSA_SOUNDS_DIR.is_dir():
        assert heldout == {} and notes["alsa"].startswith("absent")


@pytest.mark.skipif(not ALSA_SOUNDS_DIR.is_dir(), reason="alsa-utils sounds not installed")
def test_alsa_clips() -> None:
    clips = load_alsa_clips()
    assert "Noise" not in clips and "Front_Left" in clips
    for c in clips.values():
        assert c.dtype == np.int16 and c[0] != 0 and c[-1] != 0
        assert 0.5 < c.size / 16000 < 2.0


def test_engine_is_initialised_once() -> None:
    pytest.importorskip("espeakng_loader")
    from invertible.data import _espeak

    a = speech.synthesize("Hello.", "en")
    engine = _espeak._ENGINE
    b = speech.synthesize("Hello.", "en-us", rate=200, pitch=20)
    assert engine is not None and _espeak._ENGINE is engine
    assert a.dtype == np.int16 and 0.2 < a.size / _espeak.ESPEAK_SAMPLE_RATE < 2 and b.size
    with pytest.raises(ValueError, match="no voice"):
        speech.synthesize("Hello.", "no-such-voice")


def test_speech_modules_import_no_torch() -> None:
    """data/ is a leaf: numpy, scipy, the standard library and invertible.data only."""
    import ast

    allowed = set(sys.stdlib_module_names) | {"numpy", "scipy", "espeakng_loader"}
    for module in (speech, sys.modules["invertible.data._espeak"]):
        tree = ast.parse(Path(module.__file__).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or name.startswith("invertible.data"), name


def test_bad_options_fail_clearly(tmp_path: Path) -> None:
    pytest.importorskip("espeakng_loader")
    with pytest.raises(RuntimeError, match="no voice 'nope'"):
        load_speech(tmp_path, cache_dir=tmp_path, n_prompts=3, variants=1, voices=("nope",))
    with pytest.raises(ValueError, match="at least 3"):
        load_speech(tmp_path, cache_dir=tmp_path, n_prompts=2)
    with pytest.raises(ValueError, match="exceeds"):
        load_speech(tmp_path, cache_dir=tmp_path, n_prompts=3, variants=2, voices=("en",))
