"""Image benchmark: RealNVPImage on Fashion-MNIST (bits/dim), normflows' Glow beside it.

Run on demand (not part of the test suite)::

    python -m benchmarks.images --minutes 15 --out results/images
    python -m benchmarks.images --minutes 15 --models ours,normflows --parallel --out DIR

Each model trains for ``--minutes`` of wall-clock time (evaluation excluded) with Adam on
``--threads`` CPU threads, then reports bits/dim of the validation and test images (eval
mode, one fixed draw of dequantization noise, the same for every model) and saves a grid of
samples. ``--parallel`` trains the models at the same time in separate processes (one
thread each by default), so both get the same CPU budget and the wall time is halved.

Data: Fashion-MNIST (Debian package ``dataset-fashion-mnist``, files under
``/usr/share/datasets/fashion-mnist``, or ``invertible.data.load_dataset("fashion-mnist")``);
if unavailable, the MNIST test images, then scikit-learn's 8×8 digits.

One bits/dim convention for every model (:func:`invertible.bits_per_dim`): pixels p are
dequantized, x = (p + u)/256 ∈ [0, 1); log p(x) includes the logit preprocessing Jacobian.
Our model has the logit inside (its ``log_prob`` takes x); the peer gets the same logit-space
data y = logit(λ + (1 − 2λ)x) and we add the same :class:`invertible.Logit` log-det to its
``log_prob(y)``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import invertible as inv

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
LAM = 1e-6  # MNIST-like data (MAF's setting); black backgrounds are exactly 0
MODELS = ("ours", "normflows")


# ----------------------------------------------------------------------------- data


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as handle:
        raw = handle.read()
    n, h, w = (int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in (1, 2, 3))
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, 1, h, w)


def load_images(seed: int = 0) -> tuple[str, dict[str, np.ndarray], int]:
    """``(name, {"train", "val", "test"}: uint8 [N, C, H, W], levels)``."""
    try:
        from invertible.data import load_dataset  # the data package, when it is there

        data = load_dataset("fashion-mnist")
        return "fashion-mnist", dict(data.splits), int(data.levels)
    except Exception:
        pass
    if (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        train = _read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz")
        test = _read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")
        order = np.random.default_rng(seed).permutation(len(train))
        splits = {"train": train[order[5000:]], "val": train[order[:5000]], "test": test}
        return "fashion-mnist", splits, 256
    mnist = Path("/work/shared/data/mnist/t10k-images-idx3-ubyte.gz")
    if mnist.exists():
        images = _read_idx(mnist)
        order = np.random.default_rng(seed).permutation(len(images))
        images = images[order]
        return (
            "mnist-test",
            {"train": images[:8000], "val": images[8000:9000], "test": images[9000:]},
            256,
        )
    from sklearn.datasets import load_digits

    digits = load_digits().images.astype(np.uint8)[:, None]  # values 0..16, 8x8
    order = np.random.default_rng(seed).permutation(len(digits))
    digits = digits[order]
    return "digits", {"train": digits[:1400], "val": digits[1400:1600], "test": digits[1600:]}, 17


# ----------------------------------------------------------------------------- models


class Model:
    """A flow under test: ``log_prob(x) -> [B]`` for x ∈ [0, 1) and ``sample(n)``."""

    name: str
    module: nn.Module
    config: dict[str, Any]

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def sample(self, n: int, temperature: float) -> Tensor:
        raise NotImplementedError


class Ours(Model):
    def __init__(self, shape: tuple[int, int, int], levels: int) -> None:
        self.name = "invertible RealNVPImage"
        self.config = {
            "num_scales": 2,
            "blocks_per_scale": 1,
            "channels": 32,
            "lam": LAM,
            "levels": levels,
        }
        self.flow = inv.RealNVPImage(shape, **self.config)
        self.module = self.flow

    def log_prob(self, x: Tensor) -> Tensor:
        return self.flow.log_prob(x)

    def sample(self, n: int, temperature: float) -> Tensor:
        return self.flow.sample(n, temperature=temperature)


class NormflowsGlow(Model):
    """normflows' multi-scale Glow (GlowBlock = affine coupling, 1×1 conv, ActNorm), as in
    its documented Glow example, on logit-space data."""

    def __init__(self, shape: tuple[int, int, int], levels: int) -> None:
        import normflows as nf

        c, h, w = shape
        num_levels, blocks, hidden = 2, 8, 64
        self.name = f"normflows {nf.__version__} Glow"
        self.config = {"L": num_levels, "K": blocks, "hidden_channels": hidden, "lam": LAM}
        q0, merges, flows = [], [], []
        for i in range(num_levels):
            level = [
                nf.flows.GlowBlock(c * 2 ** (num_levels + 1 - i), hidden, split_mode="channel")
                for _ in range(blocks)
            ]
            level.append(nf.flows.Squeeze())
            flows.append(level)
            if i > 0:
                merges.append(nf.flows.Merge())
                k = num_levels - i
                latent = (c * 2**k, h // 2**k, w // 2**k)
            else:
                latent = (c * 2 ** (num_levels + 1), h // 2**num_levels, w // 2**num_levels)
            q0.append(nf.distributions.GlowBase(latent))
        self.model = nf.MultiscaleFlow(q0, flows, merges, class_cond=False)
        self.module = self.model
        self.logit = inv.Logit(LAM)

    def log_prob(self, x: Tensor) -> Tensor:
        y, ladj = self.logit.inverse(x)
        return self.model.log_prob(y, None) + ladj

    def sample(self, n: int, temperature: float) -> Tensor:
        y, _ = self.model.sample(n, temperature=temperature)
        return self.logit(y)[0]


BUILDERS = {"ours": Ours, "normflows": NormflowsGlow}


# ----------------------------------------------------------------------------- training


@torch.no_grad()
def evaluate(model: Model, images: np.ndarray, levels: int, batch: int = 500) -> float:
    """Mean bits/dim over ``images`` with one fixed draw of dequantization noise."""
    model.module.eval()
    generator = torch.Generator().manual_seed(1234)
    total, count = 0.0, 0
    features = math.prod(images.shape[1:])
    for start in range(0, len(images), batch):
        x = inv.dequantize(images[start : start + batch], levels, generator=generator)
        bpd = inv.bits_per_dim(model.log_prob(x), features, levels)
        total += float(bpd.sum())
        count += len(x)
    model.module.train()
    return total / count


def train_one(key: str, args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    name, splits, levels = load_images(args.seed)
    shape = tuple(int(s) for s in splits["train"].shape[1:])
    model = BUILDERS[key](shape, levels)  # type: ignore[arg-type]
    params = sum(p.numel() for p in model.module.parameters())
    optimizer = torch.optim.Adam(model.module.parameters(), lr=args.lr)
    train = splits["train"]
    generator = torch.Generator().manual_seed(args.seed)
    budget = args.minutes * 60.0
    start = time.perf_counter()
    steps, seen, losses = 0, 0, []
    features = math.prod(shape)
    while time.perf_counter() - start < budget:
        order = torch.randperm(len(train), generator=generator).numpy()
        for i in range(0, len(order) - args.batch + 1, args.batch):
            x = inv.dequantize(train[order[i : i + args.batch]], levels, generator=generator)
            loss = -model.log_prob(x).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.module.parameters(), 100.0)
            optimizer.step()
            steps += 1
            seen += len(x)
            losses.append(loss.detach().item())
            if steps % 100 == 0:
                bpd = inv.bits_per_dim(float(np.mean(losses[-100:])) * -1, features, levels)
                elapsed = time.perf_counter() - start
                print(f"[{key}] step {steps} {elapsed:6.0f}s train bits/dim {bpd:.3f}", flush=True)
            if time.perf_counter() - start >= budget:
                break
    train_seconds = time.perf_counter() - start
    val_bpd = evaluate(model, splits["val"], levels)
    test_bpd = evaluate(model, splits["test"], levels)
    model.module.eval()
    torch.manual_seed(args.seed)
    grids = {}
    out = Path(args.out)
    for temperature in (1.0, 0.7):
        samples = model.sample(64, temperature)
        path = out / f"samples_{key}_T{temperature}.png"
        inv.save_image_grid(samples, path, nrow=8, scale=2)
        grids[str(temperature)] = str(path)
    result = {
        "model": model.name,
        "key": key,
        "config": model.config,
        "data": name,
        "shape": list(shape),
        "train_images": len(train),
        "parameters": params,
        "threads": args.threads,
        "budget_minutes": args.minutes,
        "train_seconds": round(train_seconds, 1),
        "steps": steps,
        "epochs": round(seen / len(train), 2),
        "batch": args.batch,
        "lr": args.lr,
        "val_bits_per_dim": round(val_bpd, 4),
        "test_bits_per_dim": round(test_bpd, 4),
        "sample_grids": grids,
    }
    (out / f"result_{key}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2), flush=True)
    return result


def _available(key: str) -> bool:
    if key == "normflows":
        try:
            import normflows  # noqa: F401
        except ImportError:
            return False
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget per model")
    parser.add_argument("--out", default="results/images")
    parser.add_argument("--models", default="ours,normflows")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--parallel", action="store_true", help="one process per model")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    keys = [k for k in args.models.split(",") if k]
    for key in keys:
        if key not in BUILDERS:
            parser.error(f"unknown model {key!r}; choose from {', '.join(MODELS)}")
    skipped = [k for k in keys if not _available(k)]
    keys = [k for k in keys if k not in skipped]
    for key in skipped:
        print(f"[{key}] not installed: skipped", flush=True)
    if args.parallel and len(keys) > 1:
        threads = args.threads or max(1, (os.cpu_count() or 2) // len(keys))
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.images",
                    "--models",
                    key,
                    "--threads",
                    str(threads),
                    "--minutes",
                    str(args.minutes),
                    "--out",
                    args.out,
                    "--batch",
                    str(args.batch),
                    "--lr",
                    str(args.lr),
                    "--seed",
                    str(args.seed),
                ]
            )
            for key in keys
        ]
        for proc in procs:
            proc.wait()
        results = [
            json.loads((Path(args.out) / f"result_{k}.json").read_text())
            for k in keys
            if (Path(args.out) / f"result_{k}.json").exists()
        ]
    else:
        args.threads = args.threads or torch.get_num_threads()
        results = [train_one(key, args) for key in keys]
    print("\nmodel | data | params | budget | steps | epochs | val bits/dim | test bits/dim")
    for r in results:
        print(
            f"{r['model']} | {r['data']} | {r['parameters']:,} | {r['budget_minutes']} min x "
            f"{r['threads']} thr | {r['steps']} | {r['epochs']} | {r['val_bits_per_dim']} | "
            f"{r['test_bits_per_dim']}"
        )
    (Path(args.out) / "summary.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
