"""Speech waveforms: synthetic English from eSpeak NG, a user's WAV folder, ALSA's clips.

Three sources, one container (:class:`SpeechData`, whole ``int16`` utterances at 16 kHz):

- ``speech``: English sentences from a committed, seeded generator (word lists and
  templates), spoken by eSpeak NG (shipped, library and voice data, by the ``espeakng-loader``
  wheel of the ``audio`` extra) in several voices, rates and pitches, resampled from
  22,050 Hz to 16 kHz. Built offline in seconds and cached as ``.npz`` plus a JSON manifest.
  Splits are by *prompt*: every rendering of a sentence lies in one split.
- ``speech-wav``: the 16-bit PCM WAV files under a directory (LJSpeech, VCTK, your own),
  mono-mixed and resampled to 16 kHz, split by utterance.
- ALSA's real voice clips (``/usr/share/sounds/alsa``, Debian package ``alsa-utils``): a
  small held-out real-speech set attached to both, reported separately, when present.

Audio is never peak-normalised: scaling a waveform by ``g`` shifts its log-likelihood by
``-ln g`` per sample, so levels are kept as recorded. Models see
``x = (n + u) / 32768`` with ``n`` the ``int16`` sample and ``u ~ U[0, 1)``, on ``[-1, 1]``.

This module imports numpy, scipy and the standard library only (no torch).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from invertible.data._espeak import ESPEAK_SAMPLE_RATE, get_engine
from invertible.data.base import (
    DatasetFormatError,
    Located,
    RequiredFile,
    resolve_cache_dir,
    seeded_rng,
)

__all__ = [
    "ALSA_SOUNDS_DIR",
    "AUDIO_EXTRA_HINT",
    "DEFAULT_VOICES",
    "SAMPLE_RATE",
    "AudioExtraMissingError",
    "SpeechData",
    "espeak_paths",
    "generate_prompts",
    "load_alsa_clips",
    "load_speech",
    "load_speech_wav",
    "locate_speech_wav",
    "read_wav",
    "resample",
    "synthesize",
    "write_wav",
]

#: Sample rate of every :class:`SpeechData` (Hz).
SAMPLE_RATE = 16000
#: Bumped whenever the build changes what bytes it produces (invalidates caches).
BUILD_VERSION = 1
#: The one-line remedy when the ``audio`` extra is missing.
AUDIO_EXTRA_HINT = "pip install 'invertible[audio]'"
#: Where Debian's ``alsa-utils`` installs its spoken channel names (48 kHz mono WAV).
ALSA_SOUNDS_DIR = Path("/usr/share/sounds/alsa")
#: eSpeak NG voices (language + variant) used by ``speech``; all ship in espeakng-loader.
DEFAULT_VOICES: tuple[str, ...] = (
    "en",
    "en-us",
    "en+f2",
    "en+f4",
    "en+m3",
    "en+m7",
    "en-us+f3",
    "en-us+m5",
    "en-gb-scotland",
    "en-gb-x-rp+f1",
)

_SPLITS = ("train", "val", "test")


class AudioExtraMissingError(ImportError):
    """A dependency of the ``audio`` extra (espeakng-loader, scipy) is not installed."""


# --------------------------------------------------------------------------- prompts

_SUBJECTS = (
    "the old sailor", "my sister", "a young doctor", "the farmer", "our teacher",
    "the small child", "a tired driver", "the baker", "his neighbour", "the quiet student",
    "a clever fox", "the captain", "her grandfather", "the new mayor", "a busy nurse",
)  # fmt: skip
_VERBS = (
    "painted", "carried", "found", "repaired", "opened", "sold", "watched", "cleaned",
    "borrowed", "described", "measured", "followed", "dropped", "wrapped", "counted",
)  # fmt: skip
_OBJECTS = (
    "a green boat", "the broken window", "seven apples", "an old map", "the wooden chair",
    "a heavy parcel", "the silver key", "two yellow kites", "a long letter",
    "the kitchen table", "a bag of rice", "the morning paper", "a basket of plums",
)  # fmt: skip
_PLACES = (
    "near the river", "in the garden", "at the station", "behind the school", "on the hill",
    "by the harbour", "in the market", "under the bridge", "at the library",
)  # fmt: skip
_TIMES = (
    "yesterday", "on Monday", "after dinner", "before sunrise", "last winter",
    "every morning", "at noon", "in the evening", "on Friday night",
)  # fmt: skip
_TEMPLATES = (
    "{S} {V} {O} {P}.",
    "{T}, {S} {V} {O}.",
    "{S} {V} {O} {P} {T}.",
    "Why do you think {s} {V} {O} {P}?",
    "I heard that {s} {V} {O}, and then {s2} {V2} {O2}.",
    "There were {N} people {P} {T}.",
    "{S} {V} {O}, but {s2} never noticed.",
    "Is it true that {s} {V} {O} {T}?",
)


def generate_prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct English sentences from a seeded template grammar.

    Example:
        >>> p = generate_prompts(3, seed=0)
        >>> len(set(p)), p == generate_prompts(3, seed=0)
        (3, True)
    """
    rng = seeded_rng(seed, "speech-prompts")
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        text = _fill(str(rng.choice(_TEMPLATES)), rng)
        if text not in seen:  # identical text would give near-identical audio
            seen.add(text)
            out.append(text)
    return out


def _fill(template: str, rng: np.random.Generator) -> str:
    def pick(words: Sequence[str]) -> str:
        return str(words[rng.integers(len(words))])

    slots = {
        "s": pick(_SUBJECTS),
        "s2": pick(_SUBJECTS),
        "V": pick(_VERBS),
        "V2": pick(_VERBS),
        "O": pick(_OBJECTS),
        "O2": pick(_OBJECTS),
        "P": pick(_PLACES),
        "T": pick(_TIMES),
        "N": str(int(rng.integers(2, 99))),
    }
    slots["S"] = slots["s"]
    text = template.format(**slots)
    return text[0].upper() + text[1:]


# --------------------------------------------------------------------------- dependencies


def espeak_paths() -> tuple[str, str]:
    """``(shared library, voice data directory)`` of eSpeak NG from ``espeakng-loader``.

    Raises:
        AudioExtraMissingError: espeakng-loader is not installed (one line naming the fix).
    """
    try:
        import espeakng_loader  # noqa: PLC0415 (optional: the audio extra)
    except ImportError:
        raise AudioExtraMissingError(
            f"the speech dataset needs eSpeak NG from the audio extra: {AUDIO_EXTRA_HINT}"
        ) from None
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def _resample_poly() -> Any:
    try:
        from scipy.signal import resample_poly  # noqa: PLC0415 (optional: the audio extra)
    except ImportError:
        raise AudioExtraMissingError(
            f"resampling audio needs scipy from the audio extra: {AUDIO_EXTRA_HINT}"
        ) from None
    return resample_poly


def _espeak_version() -> str:
    try:
        return importlib.metadata.version("espeakng-loader")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def resample(x: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample ``int16`` audio by the exact rational ratio (``scipy.signal.resample_poly``).

    The result is rounded and clipped back to ``int16``. 22,050 → 16,000 Hz is up 320,
    down 441 (``160/441`` would give 8 kHz).

    Example:
        >>> resample(np.zeros(441, np.int16), 22050).shape
        (320,)
    """
    x = np.asarray(x)
    if rate_in == rate_out:
        return x.astype(np.int16, copy=False)
    up, down = _ratio(rate_in, rate_out)
    y = _resample_poly()(x.astype(np.float64), up, down)
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def _ratio(rate_in: int, rate_out: int) -> list[int]:
    """``[up, down]`` of the exact rational resampling ratio."""
    r = Fraction(int(rate_out), int(rate_in))
    return [r.numerator, r.denominator]


def _trim_silence(x: np.ndarray) -> np.ndarray:
    """Drop exact digital silence (zeros) at both ends; interior pauses are kept."""
    nz = np.flatnonzero(x)
    return x[nz[0] : nz[-1] + 1] if nz.size else x[:0]


# --------------------------------------------------------------------------- WAV files


def write_wav(path: str | os.PathLike[str], x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono 16-bit PCM WAV (stdlib :mod:`wave`).

    Args:
        path: Output file.
        x: ``int16`` samples, or floats on ``[-1, 1]`` (scaled by 32768, rounded, clipped).
        sample_rate: Hz.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "a.wav")
        >>> write_wav(p, np.array([0, 1, -2], np.int16))
        >>> read_wav(p)
        (array([ 0,  1, -2], dtype=int16), 16000)
    """
    x = np.asarray(x)
    if x.dtype != np.int16:
        x = np.clip(np.rint(x.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(x.astype("<i2").tobytes())


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM WAV file as mono ``int16`` (channels averaged) and its sample rate.

    Raises:
        DatasetFormatError: Not a 16-bit PCM WAV file, or unreadable.
    """
    try:
        with wave.open(os.fspath(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        raise DatasetFormatError(f"{path}: not a readable PCM WAV file ({e})") from e
    if width != 2:
        raise DatasetFormatError(f"{path}: {8 * width}-bit samples; only 16-bit PCM is read")
    x = np.frombuffer(raw, dtype="<i2")
    if channels > 1:
        x = x[: x.size - x.size % channels].reshape(-1, channels).astype(np.float64).mean(axis=1)
        x = np.clip(np.rint(x), -32768, 32767)
    return x.astype(np.int16), int(rate)


def _load_wav(path: Path, sample_rate: int) -> np.ndarray:
    x, rate = read_wav(path)
    return resample(x, rate, sample_rate)


def load_alsa_clips(
    directory: str | os.PathLike[str] = ALSA_SOUNDS_DIR, sample_rate: int = SAMPLE_RATE
) -> dict[str, np.ndarray]:
    """ALSA's spoken channel names (real speech, 48 kHz) at ``sample_rate``, by file stem.

    ``Noise.wav`` is skipped (it is not speech) and digital silence is trimmed at both ends.
    Returns an empty dict when the directory is absent (``apt-get install alsa-utils``).
    """
    files = sorted(Path(directory).glob("*.wav")) if Path(directory).is_dir() else []
    return {
        f.stem: _trim_silence(_load_wav(f, sample_rate))
        for f in files
        if f.name.lower() != "noise.wav"
    }


# --------------------------------------------------------------------------- container


def _numpy_generator(generator: Any) -> np.random.Generator:
    """A numpy Generator from a Generator, an int seed, or an already imported torch one."""
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, (int, np.integer)):
        return np.random.default_rng(int(generator))
    torch = sys.modules.get("torch")  # never imported here; only used if the caller has it
    if torch is not None and isinstance(generator, torch.Generator):
        seed = torch.randint(0, 2**62, (1,), generator=generator).item()
        return np.random.default_rng(int(seed))
    raise TypeError(f"generator must be a numpy Generator or an int seed, got {generator!r}")


@dataclass(repr=False)
class SpeechData:
    """Whole utterances of 16-bit speech, with random crops for training.

    Attributes:
        name: Registry name.
        train, val, test: Lists of ``int16`` 1-D arrays (one per utterance), never
            normalised.
        sample_rate: Hz (16,000).
        manifest: JSON-serialisable description of the build (prompts, voices, rates,
            pitches, splits, hashes, ...) or of the files read.
        info: JSON-serialisable notes (source, license, sizes, held-out sets).
        heldout: Extra real-speech evaluation sets by name (``"alsa"``), possibly empty.
        crop: Default crop length of :meth:`train_batch`, in samples.

    Example:
        >>> d = SpeechData("demo", [np.arange(-50, 50, dtype=np.int16)], [], [], crop=8)
        >>> d.train_batch(4, 0).shape, d.eval_utterances("train")[0].dtype.name
        ((4, 8), 'float32')
    """

    name: str
    train: list[np.ndarray]
    val: list[np.ndarray]
    test: list[np.ndarray]
    sample_rate: int = SAMPLE_RATE
    manifest: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    heldout: dict[str, list[np.ndarray]] = field(default_factory=dict)
    crop: int = 8192

    def __post_init__(self) -> None:
        for split in _SPLITS:
            clips = [np.asarray(c) for c in getattr(self, split)]
            if any(c.dtype != np.int16 or c.ndim != 1 for c in clips):
                raise ValueError(f"{self.name}.{split} must hold 1-D int16 arrays")
            setattr(self, split, clips)
        self._flat: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def splits(self) -> dict[str, list[np.ndarray]]:
        """Train/val/test and every held-out set, by name."""
        return {"train": self.train, "val": self.val, "test": self.test, **self.heldout}

    def seconds(self, split: str) -> float:
        """Total duration of a split in seconds."""
        return sum(c.size for c in self.splits[split]) / self.sample_rate

    def train_batch(self, batch_size: int, generator: Any, crop: int | None = None) -> np.ndarray:
        """Random training crops with fresh uniform dequantisation noise.

        Crop positions are uniform over every position in the training set where a whole
        crop fits (so longer utterances are drawn more often); ``x = (n + u) / 32768`` with
        fresh ``u ~ U[0, 1)``.

        Args:
            batch_size: Number of crops.
            generator: A :class:`numpy.random.Generator` (advanced by the call, so successive
                calls differ), or an int seed (a fresh generator: the same seed gives the
                same batch). A ``torch.Generator`` also works when torch is loaded.
            crop: Crop length in samples (default :attr:`crop`).

        Returns:
            ``float32`` array ``[batch_size, crop]`` on ``[-1, 1]`` (computed in float64; the
            cast may round ``n + u`` with ``u`` just below 1 onto the bin edge ``n + 1``).
        """
        rng = _numpy_generator(generator)
        crop = int(crop or self.crop)
        flat, offsets, lengths = self._flat_train()
        room = np.clip(lengths - crop + 1, 0, None)
        if room.sum() == 0:
            raise ValueError(f"no training utterance of {self.name} is {crop} samples long")
        idx = rng.choice(lengths.size, size=batch_size, p=room / room.sum())
        start = offsets[idx] + (rng.random(batch_size) * room[idx]).astype(np.int64)
        n = flat[start[:, None] + np.arange(crop)]
        u = rng.random((batch_size, crop))
        return ((n + u) / 32768.0).astype(np.float32)

    def eval_utterances(self, split: str = "test", seed: int = 0) -> list[np.ndarray]:
        """Whole utterances of a split with fixed (seeded) dequantisation noise.

        Utterance ``i`` of ``split`` always gets the same noise for a given ``seed``, so
        evaluations from zero history are repeatable and comparable across models.

        Returns:
            ``float32`` 1-D arrays ``(n + u) / 32768``.
        """
        if split not in self.splits:
            raise KeyError(f"{self.name} has no split {split!r}; it has {sorted(self.splits)}")
        out = []
        for i, n in enumerate(self.splits[split]):
            u = seeded_rng(seed, "speech-eval", split, i).random(n.size)
            out.append(((n + u) / 32768.0).astype(np.float32))
        return out

    def val_batches(
        self, max_crops: int = 16, crop: int | None = None, batch_size: int = 8, seed: int = 0
    ) -> list[np.ndarray]:
        """Fixed validation crops: the same samples and noise at every call (early stopping).

        Non-overlapping crops of :attr:`crop` samples are taken from the validation
        utterances in turn (the first crop of each, then the second, ...; ``max_crops`` in
        all), from the fixed-noise waveforms
        of :meth:`eval_utterances`; an utterance shorter than a crop gives none, and when no
        crop fits the whole utterances are returned one per batch.

        Returns:
            ``float32`` batches ``[<= batch_size, crop]`` (or ``[1, T]`` whole utterances).
        """
        crop = int(crop or self.crop)
        utterances = self.eval_utterances("val", seed)
        per_utterance = [
            [x[start : start + crop] for start in range(0, x.size - crop + 1, crop)]
            for x in utterances
        ]
        # round-robin over utterances, so a few crops already cover several speakers
        depth = max((len(c) for c in per_utterance), default=0)
        crops = [c[k] for k in range(depth) for c in per_utterance if k < len(c)][:max_crops]
        if not crops:
            return [x[None] for x in utterances]
        return [np.stack(crops[i : i + batch_size]) for i in range(0, len(crops), batch_size)]

    def _flat_train(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._flat is None:  # one buffer, so a batch is a single vectorised gather
            lengths = np.array([c.size for c in self.train], np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            flat = np.concatenate([*self.train, np.zeros(0, np.int16)]).astype(np.float64)
            self._flat = (flat, offsets, lengths)
        return self._flat

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{k}={len(v)} utt/{self.seconds(k):.1f}s" for k, v in self.splits.items()
        )
        return f"SpeechData(name={self.name!r}, sample_rate={self.sample_rate}, {parts})"


# --------------------------------------------------------------------------- speech (eSpeak)


def synthesize(text: str, voice: str = "en", rate: int = 175, pitch: int = 50) -> np.ndarray:
    """Speak ``text`` with eSpeak NG in this process (``int16`` at 22,050 Hz).

    The engine is initialised once per process. It carries state between utterances, so
    repeated calls are not byte-identical; :func:`load_speech` builds in a fresh process.

    Raises:
        AudioExtraMissingError: espeakng-loader is not installed.
    """
    return get_engine(*espeak_paths()).synthesize(text, voice, rate, pitch)


def _synthesize_fresh(jobs: list[list[Any]], seed: int) -> list[np.ndarray]:
    """Synthesise ``jobs`` in a fresh interpreter, so the output bytes are reproducible."""
    library, data = espeak_paths()
    worker = Path(__file__).with_name("_espeak.py")
    with tempfile.TemporaryDirectory(prefix="invertible-espeak-") as tmp:
        out = os.path.join(tmp, "clips.npz")
        request = {"library": library, "data": data, "seed": seed, "jobs": jobs, "out": out}
        # run by path: importing the package would import torch in the worker
        code = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"
        proc = subprocess.run(
            [sys.executable, "-c", code, str(worker)],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            cwd=tmp,
            check=False,
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"the eSpeak NG worker failed (exit {proc.returncode}): {last}")
        with np.load(out) as z:
            audio, lengths = z["audio"], z["lengths"]
    return np.split(audio, np.cumsum(lengths)[:-1]) if lengths.size else []


def _split_prompts(n: int, fractions: Sequence[float], seed: int) -> list[str]:
    """The split of each prompt: a seeded shuffle, at least one prompt in val and test."""
    if n < 3:
        raise ValueError(f"n_prompts must be at least 3 (one per split), got {n}")
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1: {fractions}")
    n_val = max(1, round(n * fractions[1]))
    n_test = max(1, round(n * fractions[2]))
    order = seeded_rng(seed, "speech-split").permutation(n)
    split = ["train"] * n
    for rank, i in enumerate(order):
        if rank < n_test:
            split[i] = "test"
        elif rank < n_test + n_val:
            split[i] = "val"
    return split


def _plan(config: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per utterance to synthesise: prompt, split, voice, rate, pitch."""
    seed = config["seed"]
    prompts = generate_prompts(config["n_prompts"], seed)
    splits = _split_prompts(len(prompts), config["fractions"], seed)
    rng = seeded_rng(seed, "speech-variants")
    voices = config["voices"]
    if config["variants"] > len(voices):
        raise ValueError(f"variants={config['variants']} exceeds the {len(voices)} voices")
    plan = []
    for pid, (text, split) in enumerate(zip(prompts, splits)):
        for v in rng.choice(len(voices), size=config["variants"], replace=False):
            plan.append(
                {
                    "prompt_id": pid,
                    "text": text,
                    "split": split,
                    "voice": voices[int(v)],
                    "rate": int(rng.integers(config["rate_range"][0], config["rate_range"][1] + 1)),
                    "pitch": int(
                        rng.integers(config["pitch_range"][0], config["pitch_range"][1] + 1)
                    ),
                }
            )
    return plan


def _build(config: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Synthesise, trim, resample and de-duplicate; the concatenated audio and manifest."""
    t0 = time.perf_counter()
    plan = _plan(config)
    raw = _synthesize_fresh([[p["text"], p["voice"], p["rate"], p["pitch"]] for p in plan], 0)
    clips, entries, seen, dropped = [], [], set(), 0
    for p, x in zip(plan, raw):
        # trim before (exact zeros) and after (resampling rounds the tails back to 0)
        y = _trim_silence(resample(_trim_silence(x), ESPEAK_SAMPLE_RATE, SAMPLE_RATE))
        digest = hashlib.sha256(y.tobytes()).hexdigest()
        if digest in seen or y.size == 0:  # identical audio must not sit in two splits
            dropped += 1
            continue
        seen.add(digest)
        clips.append(y)
        entries.append({**p, "n_samples": int(y.size), "sha256": digest})
    audio = np.concatenate([*clips, np.zeros(0, np.int16)])
    manifest = {
        "dataset": "speech",
        "build_version": BUILD_VERSION,
        "sample_rate": SAMPLE_RATE,
        "source_sample_rate": ESPEAK_SAMPLE_RATE,
        "resample": _ratio(ESPEAK_SAMPLE_RATE, SAMPLE_RATE),
        "espeakng_loader": _espeak_version(),
        "config": config,
        "duplicates_dropped": dropped,
        "audio_sha256": hashlib.sha256(audio.tobytes()).hexdigest(),
        "utterances": entries,
        "splits": _split_stats(entries),
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    return audio, manifest


def _split_stats(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    stats = {}
    for s in _SPLITS:
        mine = [e for e in entries if e["split"] == s]
        stats[s] = {
            "utterances": len(mine),
            "prompts": len({e["prompt_id"] for e in mine}),
            "seconds": round(sum(e["n_samples"] for e in mine) / SAMPLE_RATE, 3),
        }
    return stats


def _cache_paths(cache_dir: Path, config: dict[str, Any]) -> tuple[Path, Path]:
    key = hashlib.sha256(
        json.dumps([BUILD_VERSION, _espeak_version(), config], sort_keys=True).encode()
    ).hexdigest()[:16]
    stem = cache_dir / "speech" / f"speech-{key}"
    return stem.with_suffix(".npz"), stem.with_suffix(".json")


def _read_cache(npz: Path, manifest_path: Path) -> tuple[np.ndarray, dict[str, Any]] | None:
    try:
        manifest = json.loads(manifest_path.read_text())
        with np.load(npz, allow_pickle=False) as z:
            audio = z["audio"]
    except (OSError, ValueError, KeyError, EOFError):
        return None
    if manifest.get("build_version") != BUILD_VERSION or hashlib.sha256(
        audio.tobytes()
    ).hexdigest() != manifest.get("audio_sha256"):
        return None  # stale or corrupt: rebuild
    return audio, manifest


def _write_cache(npz: Path, manifest_path: Path, audio: np.ndarray, manifest: dict) -> None:
    npz.parent.mkdir(parents=True, exist_ok=True)
    for path, write in (
        (npz, lambda fh: np.savez(fh, audio=audio)),
        (manifest_path, lambda fh: fh.write(json.dumps(manifest, indent=1).encode())),
    ):
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # atomic: a reader never sees half a file


def _heldout(use: bool, sample_rate: int) -> tuple[dict[str, list[np.ndarray]], dict[str, str]]:
    if not use:
        return {}, {}
    clips = load_alsa_clips(ALSA_SOUNDS_DIR, sample_rate)
    if not clips:
        return {}, {"alsa": f"absent: {ALSA_SOUNDS_DIR} not found (apt-get install alsa-utils)"}
    seconds = sum(c.size for c in clips.values()) / sample_rate
    note = f"{len(clips)} real clips ({', '.join(clips)}), {seconds:.1f} s, from {ALSA_SOUNDS_DIR}"
    return {"alsa": list(clips.values())}, {"alsa": note}


def load_speech(
    data_dir: Path,
    *,
    n_prompts: int = 60,
    variants: int = 2,
    seed: int = 0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    voices: Sequence[str] = DEFAULT_VOICES,
    rate_range: tuple[int, int] = (140, 200),
    pitch_range: tuple[int, int] = (30, 70),
    crop: int = 8192,
    cache_dir: str | os.PathLike[str] | None = None,
    rebuild: bool = False,
    real_heldout: bool = True,
) -> SpeechData:
    """The ``speech`` dataset: synthetic English from eSpeak NG at 16 kHz, split by prompt.

    Built on first use (seconds) and cached under the cache directory (see
    :func:`~invertible.data.base.resolve_cache_dir`) as ``speech/speech-<key>.npz`` plus a
    JSON manifest; the key covers every option and the espeakng-loader version, and a
    rebuild gives the same bytes.

    Args:
        data_dir: Data directory (only decides the default cache location).
        n_prompts: Distinct sentences; each split gets whole prompts.
        variants: Renderings per prompt, each with a different voice.
        seed: Seeds the sentences, the split and the voice/rate/pitch draws.
        fractions: Train/val/test fractions of the prompts (val and test get at least one).
        voices: eSpeak NG voice names (``language[+variant]``).
        rate_range: Inclusive range of speaking rates, words per minute.
        pitch_range: Inclusive range of base pitches (eSpeak's 0-100 scale).
        crop: Default crop length of :meth:`SpeechData.train_batch`.
        cache_dir: Overrides the cache directory.
        rebuild: Ignore (and overwrite) a cached build.
        real_heldout: Attach ALSA's real clips as ``heldout["alsa"]`` when installed.

    Raises:
        AudioExtraMissingError: espeakng-loader or scipy is missing.
    """
    config = {
        "n_prompts": int(n_prompts),
        "variants": int(variants),
        "seed": int(seed),
        "fractions": [float(f) for f in fractions],
        "voices": list(voices),
        "rate_range": [int(r) for r in rate_range],
        "pitch_range": [int(p) for p in pitch_range],
    }
    npz, manifest_path = _cache_paths(resolve_cache_dir(Path(data_dir), cache_dir), config)
    cached = None if rebuild else _read_cache(npz, manifest_path)
    if cached is None:
        audio, manifest = _build(config)
        try:
            _write_cache(npz, manifest_path, audio, manifest)
        except OSError as e:  # a read-only cache costs a rebuild next time, nothing more
            warnings.warn(f"could not cache the speech build at {npz}: {e}", stacklevel=2)
    else:
        audio, manifest = cached
    entries = manifest["utterances"]
    clips = np.split(audio, np.cumsum([e["n_samples"] for e in entries])[:-1]) if entries else []
    by_split: dict[str, list[np.ndarray]] = {s: [] for s in _SPLITS}
    for e, c in zip(entries, clips):
        by_split[e["split"]].append(c)
    heldout, notes = _heldout(real_heldout, SAMPLE_RATE)
    info = {
        "source": "eSpeak NG (espeakng-loader wheel), seeded template sentences",
        "license": "eSpeak NG is GPL-3.0; the generated audio carries no third-party content",
        "splits": manifest["splits"],
        "cache": str(npz),
        "heldout": notes,
        "scale": "x = (int16 + U[0,1)) / 32768 on [-1, 1]; never normalised",
    }
    return SpeechData(
        "speech", **by_split, manifest=manifest, info=info, heldout=heldout, crop=crop
    )


# --------------------------------------------------------------------------- speech-wav


def _wav_root(data_dir: Path, wav_dir: str | os.PathLike[str] | None) -> Path:
    return Path(os.path.expanduser(os.fspath(wav_dir))) if wav_dir else data_dir / "speech-wav"


def _wav_requirement(root: Path) -> RequiredFile:
    return RequiredFile(
        "*.wav (16-bit PCM, any rate; sub-directories are searched)",
        "https://keithito.com/LJ-Speech-Dataset/ (LJSpeech), "
        "https://datashare.ed.ac.uk/handle/10283/3443 (VCTK), or any speech corpus",
        root,
        "or pass wav_dir=<folder>",
    )


def locate_speech_wav(data_dir: Path, wav_dir: str | os.PathLike[str] | None = None) -> Located:
    """Whether the WAV folder (``<data_dir>/speech-wav/`` or ``wav_dir``) holds a ``.wav``."""
    root = _wav_root(data_dir, wav_dir)
    first = next(iter(sorted(root.rglob("*.wav"))), None) if root.is_dir() else None
    if first is not None:
        return Located(found={"wav": first})
    return Located(routes=[[_wav_requirement(root)]])


def load_speech_wav(
    data_dir: Path,
    *,
    wav_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    max_files: int | None = None,
    crop: int = 8192,
    real_heldout: bool = True,
) -> SpeechData:
    """The ``speech-wav`` dataset: every WAV file under a folder, at 16 kHz, split by file.

    Files are read with :func:`read_wav` (16-bit PCM, channels averaged), resampled to
    16 kHz and never normalised. The split is a seeded shuffle of the sorted relative paths,
    so it is deterministic; ``max_files`` keeps the first files of that shuffle.

    Args:
        data_dir: Data directory; the WAVs are in ``<data_dir>/speech-wav/`` by default.
        wav_dir: A folder to use instead (e.g. ``LJSpeech-1.1/wavs``).
        seed: Seeds the split.
        fractions: Train/val/test fractions of the files.
        max_files: Use at most this many files.
        crop: Default crop length of :meth:`SpeechData.train_batch`.
        real_heldout: Attach ALSA's real clips as ``heldout["alsa"]`` when installed.

    Raises:
        DatasetNotFoundError: No ``.wav`` file under the folder.
        DatasetFormatError: A file is not 16-bit PCM WAV.
    """
    root = _wav_root(Path(data_dir), wav_dir)
    locate_speech_wav(Path(data_dir), wav_dir).require("speech-wav", Path(data_dir))
    files = sorted(root.rglob("*.wav"))
    order = seeded_rng(seed, "speech-wav-split").permutation(len(files))
    files = [files[i] for i in order[: max_files or len(files)]]
    split_of = (
        _split_prompts(len(files), fractions, seed) if len(files) >= 3 else ["train"] * len(files)
    )
    by_split: dict[str, list[np.ndarray]] = {s: [] for s in _SPLITS}
    entries = []
    for f, s in zip(files, split_of):
        x = _load_wav(f, SAMPLE_RATE)
        by_split[s].append(x)
        rel = str(f.relative_to(root))
        entries.append({"file": rel, "split": s, "n_samples": int(x.size),
                        "sha256": hashlib.sha256(x.tobytes()).hexdigest()})  # fmt: skip
    manifest = {
        "dataset": "speech-wav",
        "root": str(root),
        "sample_rate": SAMPLE_RATE,
        "seed": seed,
        "utterances": entries,
        "splits": _split_stats([{**e, "prompt_id": e["file"]} for e in entries]),
    }
    heldout, notes = _heldout(real_heldout, SAMPLE_RATE)
    info = {"source": str(root), "splits": manifest["splits"], "heldout": notes}
    return SpeechData("speech-wav", **by_split, manifest=manifest, info=info, heldout=heldout,
                      crop=crop)  # fmt: skip
