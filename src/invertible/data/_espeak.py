"""A minimal ctypes binding of the eSpeak NG speech synthesiser (stdlib and numpy only).

eSpeak NG is a global C library: one engine per process, initialised at most once (guarded
by a lock here). It also keeps state between utterances (the pitch "flutter" phase and its
noise generators are never reset), so the same text synthesised twice in one process gives
slightly different samples, while the same *sequence* of requests in a fresh process gives
the same bytes every time. :mod:`invertible.data.speech` therefore builds datasets by
running this file as a script in a fresh interpreter (:func:`main`), which also keeps a
crash of the C library out of the caller's process.

The worker protocol: a JSON object on stdin ``{"library": path, "data": path, "seed": int,
"jobs": [[text, voice, rate, pitch], ...], "out": path}``; it writes an ``.npz`` with
``audio`` (all utterances concatenated, ``int16`` at :data:`ESPEAK_SAMPLE_RATE`) and
``lengths`` (``int64``) to ``out``.

This module must not import anything from ``invertible``: the worker runs it by path, so
that the worker does not import torch.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import tempfile
import threading

import numpy as np

#: Sample rate of eSpeak NG's output (Hz).
ESPEAK_SAMPLE_RATE = 22050

_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: the callback gets samples, no device
_ESPEAK_RATE = 1  # espeak_PARAMETER: words per minute
_ESPEAK_PITCH = 3  # espeak_PARAMETER: base pitch, 0..100
_POS_CHARACTER = 1  # espeak_POSITION_TYPE
_CHARS_UTF8 = 1  # espeak_Synth flag
_EE_OK = 0

# int callback(short *wav, int numsamples, espeak_EVENT *events): 0 continues synthesis
_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

_LOCK = threading.Lock()
_ENGINE: Engine | None = None


class Engine:
    """The process's eSpeak NG engine. Get it with :func:`get_engine`, never construct it."""

    def __init__(self, library_path: str, data_path: str) -> None:
        lib = ctypes.CDLL(library_path)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
        if rate != ESPEAK_SAMPLE_RATE:
            raise RuntimeError(f"espeak_Initialize failed (returned {rate}) with data {data_path}")
        self._lib = lib
        self._chunks: list[np.ndarray] = []
        # keep a reference: ctypes frees the trampoline if the Python object is collected
        self._callback = _SynthCallback(self._collect)
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav: ctypes.Array, n: int, _events: int) -> int:
        if wav and n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def seed(self, value: int) -> None:
        """Seed eSpeak's own noise generator (used by breathy and Klatt voices)."""
        self._lib.espeak_ng_SetRandSeed(int(value))

    def synthesize(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        """``text`` spoken by ``voice`` at ``rate`` words/minute and base ``pitch`` (0-100).

        Returns:
            ``int16`` samples at :data:`ESPEAK_SAMPLE_RATE`.
        """
        with _LOCK:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise ValueError(f"eSpeak NG has no voice {voice!r}")
            self._lib.espeak_SetParameter(_ESPEAK_RATE, int(rate), 0)
            self._lib.espeak_SetParameter(_ESPEAK_PITCH, int(pitch), 0)
            self._chunks = []
            buf = text.encode("utf-8") + b"\0"
            err = self._lib.espeak_Synth(
                buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            if err != _EE_OK:
                raise RuntimeError(f"espeak_Synth failed with error {err} on {text!r}")
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


def get_engine(library_path: str, data_path: str) -> Engine:
    """The process's engine, initialising eSpeak NG on the first call only."""
    global _ENGINE
    with _LOCK:
        if _ENGINE is None:
            _ENGINE = Engine(library_path, data_path)
        return _ENGINE


def main() -> None:
    """Worker entry point: synthesise the jobs read from stdin into an ``.npz`` file."""
    request = json.load(sys.stdin)
    engine = get_engine(request["library"], request["data"])
    engine.seed(request.get("seed", 0))
    clips = [engine.synthesize(t, v, r, p) for t, v, r, p in request["jobs"]]
    out = request["out"]
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=os.path.dirname(out) or ".")
    with os.fdopen(fd, "wb") as fh:
        np.savez(
            fh,
            audio=np.concatenate([*clips, np.zeros(0, np.int16)]),
            lengths=np.array([c.size for c in clips], np.int64),
        )
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
