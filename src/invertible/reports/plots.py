"""Figures (matplotlib, Agg backend, PNG): training curves, 2-D densities, patch and image
grids. Every function writes one file and returns its path.

Example:
    >>> import tempfile, numpy as np
    >>> hist = [{"step": 10, "train_loss": 1.0, "val_log_prob": -1.2, "event": "eval"},
    ...         {"step": 20, "train_loss": 0.8, "val_log_prob": -1.0, "event": "eval"}]
    >>> plot_training_curves({"demo": hist}, tempfile.mkdtemp() + "/c.png").suffix
    '.png'
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import torch

from invertible.evaluation.audio import log_mel_spectrogram
from invertible.evaluation.sampling import sample_images
from invertible.presets.image import tile_images
from invertible.transforms.preprocessing import bits_per_dim

__all__ = [
    "kl_curve_figure",
    "patches_to_images",
    "plot_bits_per_dim",
    "plot_density_2d",
    "plot_image_grid",
    "plot_image_samples",
    "plot_patch_grid",
    "plot_run",
    "plot_samples",
    "plot_sequence_distillation",
    "plot_training_curves",
    "save_spectrogram_png",
]


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_training_curves(
    histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike[str]
) -> Path:
    """Training loss (negated, so both curves are log-likelihoods) and validation
    log-likelihood against the step, one colour per run.
    """
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, history) in enumerate(histories.items()):
        recs = [r for r in history if r.get("event", "eval") == "eval"]
        color = f"C{i}"
        tr = [(r["step"], -r["train_loss"]) for r in recs if r.get("train_loss") is not None]
        va = [(r["step"], r["val_log_prob"]) for r in recs if r.get("val_log_prob") is not None]
        if tr:
            ax[0].plot(*zip(*tr), color=color, label=name, marker=".")
        if va:
            ax[1].plot(*zip(*va), color=color, label=name, marker=".")
    ax[0].set_title("training log-likelihood (mean over interval)")
    ax[1].set_title("validation log-likelihood")
    for a in ax:
        a.set_xlabel("step")
        a.set_ylabel("nats")
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend()
        else:
            _empty(a, "no evaluation recorded")
    # robust y-limits: the first evaluations can be far below the rest
    for a, key in ((ax[1], "val_log_prob"),):
        vals = [
            r[key]
            for h in histories.values()
            for r in h
            if r.get(key) is not None and r.get("event", "eval") == "eval"
        ]
        if len(vals) > 10:
            last = [r[key] for h in histories.values() for r in h[-3:] if r.get(key) is not None]
            lo, hi = min(np.percentile(vals, 10), *last), max(vals)  # the ends stay in view
            pad = 0.1 * (hi - lo) + 1e-6
            a.set_ylim(lo - pad, hi + pad)
    return _save(fig, path)


def _empty(ax: Any, text: str) -> None:
    """Say why a panel is empty instead of drawing blank axes."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


@torch.no_grad()
def plot_density_2d(
    flow: Any,
    data: np.ndarray,
    path: str | os.PathLike[str],
    *,
    samples: np.ndarray | None = None,
    grid: int = 200,
    title: str = "",
) -> Path:
    """For 2-D data: the model density on a grid, the model's samples, and the data."""
    data = np.asarray(data)
    lo, hi = np.percentile(data, 0.5, axis=0), np.percentile(data, 99.5, axis=0)
    pad = 0.15 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    xs, ys = np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid)
    mesh = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2).astype(np.float32)
    dtype = next(flow.parameters()).dtype if any(True for _ in flow.parameters()) else None
    was_training = flow.training
    flow.eval()
    try:
        t = torch.from_numpy(mesh)
        if dtype is not None:
            t = t.to(dtype)
        device = next(flow.parameters()).device
        lp = torch.cat([flow.log_prob(c.to(device)).cpu() for c in t.split(8192)])
        if samples is None:
            samples = flow.sample(min(len(data), 2000)).cpu().numpy()
    finally:
        flow.train(was_training)
    dens = lp.exp().reshape(grid, grid).numpy()
    fig, ax = plt.subplots(1, 3, figsize=(13, 4.2))
    ax[0].imshow(
        dens, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), cmap="magma", aspect="auto"
    )
    ax[0].set_title("model density")
    for a, pts, name in ((ax[1], samples, "model samples"), (ax[2], data[:2000], "data")):
        a.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
        a.set_xlim(lo[0], hi[0])
        a.set_ylim(lo[1], hi[1])
        a.set_title(name)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def patches_to_images(x: np.ndarray, *, side: int = 8) -> np.ndarray:
    """Vectors of ``side²`` or ``side² - 1`` values → ``[N, side, side]`` images.

    For ``side² - 1`` (the BSDS300 protocol drops the bottom-right pixel of each
    mean-subtracted patch) the dropped pixel is restored as minus the sum of the rest.

    Example:
        >>> x = np.arange(63, dtype=float)[None]
        >>> img = patches_to_images(x)
        >>> img.shape, bool(img[0, -1, -1] == -x.sum()), bool(abs(img.sum()) < 1e-9)
        ((1, 8, 8), True, True)
    """
    x = np.asarray(x, dtype=np.float64)
    d = side * side
    if x.shape[1] == d - 1:
        x = np.concatenate([x, -x.sum(axis=1, keepdims=True)], axis=1)
    if x.shape[1] != d:
        raise ValueError(f"expected {d} or {d - 1} features per patch, got {x.shape[1]}")
    return x.reshape(-1, side, side)


def plot_patch_grid(
    rows: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    *,
    n: int = 64,
    side: int = 8,
) -> Path:
    """Grids of 8x8 patches (e.g. ``{"data": test[:64], "MAF": samples}``), side by side.

    Each patch is shown with its own contrast stretch (patches are mean-subtracted), as in
    the usual patch visualisations.
    """
    names = list(rows)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        imgs = patches_to_images(np.asarray(rows[name])[:n], side=side)
        stretched = []
        for img in imgs:
            lo, hi = np.percentile(img, 1), np.percentile(img, 99)
            if np.isfinite(img).all():
                stretched.append(np.clip((img - lo) / (hi - lo + 1e-12), 0, 1))
            else:
                stretched.append(np.zeros_like(img))
        canvas = tile_images(np.stack(stretched)[..., None])[..., 0]
        ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    return _save(fig, path)


def plot_image_grid(
    images: np.ndarray, path: str | os.PathLike[str], *, levels: int = 256, title: str = ""
) -> Path:
    """A grid of images ``[N, C, H, W]`` (uint8 pixels, or floats in [0, 1])."""
    imgs = np.asarray(images)
    imgs = imgs.astype(np.float64) / (levels - 1) if imgs.dtype == np.uint8 else imgs
    imgs = np.clip(imgs, 0, 1)
    c = imgs.shape[1]
    canvas = tile_images(imgs.transpose(0, 2, 3, 1))
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None)
    ax.axis("off")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_bits_per_dim(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    features: int,
    levels: int = 256,
    title: str = "",
) -> Path:
    """Training and validation bits/dim of an image run against the epoch.

    The training curve converts the mean training loss (nats) of each evaluation interval
    with :func:`invertible.transforms.preprocessing.bits_per_dim` (D = ``features``); the
    validation curve is ``val_bits_per_dim`` (or converted from ``val_log_prob``).

    Example:
        >>> import tempfile
        >>> hist = [{"step": 5, "epoch": 0.5, "train_loss": -100.0, "val_log_prob": 120.0}]
        >>> plot_bits_per_dim(hist, tempfile.mkdtemp() + "/b.png", features=64).suffix
        '.png'
    """
    recs = [r for r in history if r.get("event", "eval") == "eval"]

    def x_of(r: Mapping[str, Any]) -> float:
        return r["epoch"] if r.get("epoch") is not None else r["step"]

    train = [
        (x_of(r), bits_per_dim(-r["train_loss"], features, levels))
        for r in recs
        if r.get("train_loss") is not None
    ]
    val = [
        (
            x_of(r),
            r.get("val_bits_per_dim") or bits_per_dim(r["val_log_prob"], features, levels),
        )
        for r in recs
        if r.get("val_log_prob") is not None
    ]
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train), label="train (mean over interval)")
    if val:
        ax.plot(*zip(*val), marker=".", label="validation")
    ax.set_xlabel("epoch" if recs and recs[0].get("epoch") is not None else "step")
    ax.set_ylabel("bits/dim")
    ax.set_title(title or "bits/dim")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return _save(fig, path)


def plot_image_samples(
    flow: Any,
    path: str | os.PathLike[str],
    *,
    levels: int = 256,
    temperature: float = 1.0,
    n: int = 64,
    seed: int = 0,
    title: str = "",
) -> Path:
    """A grid of ``n`` samples of an image flow at ``temperature``, quantised to pixels as
    the data are (see :func:`invertible.evaluation.sample_images`).
    """
    pixels = sample_images(flow, n, levels=levels, temperature=temperature, seed=seed)
    label = f"{title} samples, T = {temperature:g}".strip()
    return plot_image_grid(pixels, path, levels=levels, title=label)


def plot_samples(
    flow: Any, data: Any, path: str | os.PathLike[str], *, n: int = 64, title: str = ""
) -> Path | None:
    """The natural picture for the data: 2-D density + samples, patch grids for 63/64-D,
    image grids for images. Returns ``None`` when no picture applies.
    """
    test = data.test
    if test.dtype == np.uint8:
        samples = flow.sample(n).cpu().numpy()
        return plot_image_grid(samples, path, title=title)
    d = test.shape[1]
    if d == 2:
        return plot_density_2d(flow, test, path, title=title)
    if d in (63, 64, 48, 49, 15, 16):
        side = round(math.sqrt(d + (1 if d % 2 else 0)))
        samples = flow.sample(n).cpu().numpy()
        unstd = getattr(data, "unstandardize", None)
        ref = test[:n]
        if unstd is not None:
            samples, ref = unstd(samples), unstd(ref)
        return plot_patch_grid({"data": ref, title or "samples": samples}, path, side=side)
    return None


def kl_curve_figure(results: Sequence[Any], smooth: int = 50) -> Any:
    """A matplotlib figure of the KL estimate (running mean) and its parts per step, one
    curve per :class:`~invertible.distillation.DistillResult` of ``results``.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in results:
        kl = torch.tensor(r.history["kl"], dtype=torch.float64)
        if kl.numel() == 0:
            continue
        w = max(1, min(smooth, kl.numel()))
        running = torch.nn.functional.avg_pool1d(kl[None, None], w, stride=1)[0, 0]
        steps = torch.arange(w - 1, kl.numel())
        axes[0].plot(steps.numpy(), running.numpy(), label=r.loss)
        axes[1].plot(r.history["cross_entropy"], lw=0.6, label=f"H(S,T) {r.loss}")
        axes[1].plot(r.history["entropy"], lw=0.6, ls="--", label=f"H(S) {r.loss}")
    lengths = [len(r.history["kl"]) for r in results] or [0]
    window = max(1, min(smooth, max(lengths)))  # the window final() averages too
    values = np.abs([v for r in results for v in r.history["kl"] if np.isfinite(v)])
    wide = values.size > 0 and values.max() > 10 * max(1.0, float(np.percentile(values, 5)))
    axes[0].set(xlabel="step", ylabel="KL(S‖T) estimate (nats)",
                yscale="symlog" if wide else "linear",  # log only over several decades
                title=f"KL estimate (running mean of {window} steps)")  # fmt: skip
    if wide:
        axes[0].yaxis.set_minor_locator(mticker.SymmetricalLogLocator(
            base=10, linthresh=1, subs=np.arange(2, 10)))  # fmt: skip
    axes[1].set(xlabel="step", ylabel="nats", title="cross-entropy and entropy estimates")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            _empty(ax, "no steps recorded")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


#: Sampling temperatures of the sample grids drawn for an image run.
IMAGE_TEMPERATURES = (1.0, 0.7)


def plot_run(
    name: str,
    flow: Any,
    data: Any,
    history: Sequence[Mapping[str, Any]],
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
) -> list[Path]:
    """The figures of a training run in ``out``: ``training_curves.png``, and
    ``samples.png`` (vectors) or ``bits_per_dim.png`` and ``samples_T1.0.png``,
    ``samples_T0.7.png`` (images: quantised sample grids).
    """
    out = Path(out)
    paths = [plot_training_curves({name: history}, out / "training_curves.png")]
    if isinstance(data.train, list):  # whole utterances: samples are `invertible sample`'s job
        return paths
    if data.train.dtype != np.uint8:
        path = plot_samples(flow, data, out / "samples.png", title=name)
        return paths + ([path] if path is not None else [])
    paths.append(
        plot_bits_per_dim(
            history, out / "bits_per_dim.png", features=data.features, levels=data.levels
        )
    )
    for t in IMAGE_TEMPERATURES:
        paths.append(
            plot_image_samples(
                flow,
                out / f"samples_T{t:.1f}.png",
                levels=data.levels,
                temperature=t,
                seed=seed,
                title=name,
            )
        )
    return paths


def save_spectrogram_png(
    x: Any,
    path: str | Path,
    sample_rate: int = 16000,
    title: str = "",
    **kw: Any,
) -> Path:
    """Write a log-mel spectrogram image (matplotlib, Agg backend) and return its path."""
    spec = log_mel_spectrogram(x, sample_rate=sample_rate, **kw).numpy()
    hop = kw.get("hop", 256)
    seconds = spec.shape[1] * hop / sample_rate
    fig, ax = plt.subplots(figsize=(max(4.0, min(16.0, 2.0 + 2.0 * seconds)), 3.0))
    im = ax.imshow(spec, origin="lower", aspect="auto", extent=(0, seconds, 0, spec.shape[0]))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel bin")
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, label="ln magnitude")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _recorded(history: dict[str, list[float]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """The steps and values of ``history[key]`` where it was computed (not NaN)."""
    values = np.asarray(history.get(key, []), dtype=np.float64)
    steps = np.asarray(history["step"][: values.size], dtype=np.float64)
    keep = np.isfinite(values)
    return steps[keep], values[keep]


def plot_sequence_distillation(result: Any, path: str | os.PathLike[str]) -> Path:
    """The curves of a sequence distillation (:class:`~invertible.distillation.DistillResult`):
    the KL estimate per sample, the power loss, the student/real RMS ratio, and the
    teacher's log-likelihood of the student's samples against that of real audio.
    """
    h = result.history
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    panels = [
        (axes[0], [("kl", "KL(S‖T)")], "nats/sample", "KL estimate"),
        (axes[1], [("power", "power loss")], "mean squared log gap", "power loss"),
        (axes[2], [("rms_ratio", "student / real")], "ratio", "RMS ratio"),
        (axes[3], [("teacher_ll_student", "student samples"), ("teacher_ll_real", "real")],
         "nats/sample", "teacher log-likelihood"),
    ]  # fmt: skip
    for ax, series, ylabel, title in panels:
        drawn = False
        for key, label in series:
            steps, values = _recorded(h, key)
            if values.size:
                ax.plot(steps, values, lw=0.8, label=label)
                drawn = True
        if not drawn:
            _empty(ax, "not recorded")
        elif len(series) > 1:
            ax.legend(fontsize=7)
        ax.set(xlabel="step", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
    if h.get("rms_ratio"):
        axes[2].axhline(1.0, color="k", lw=0.6, ls=":")
    fig.tight_layout()
    return _save(fig, path)
