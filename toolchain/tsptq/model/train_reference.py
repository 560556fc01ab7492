"""Train the project's small reference ViTs from scratch, seeded (the committed checkpoints came from this script).

    python -m tsptq.model.train_reference cifar10-vit     # ~2 h on one core (26 epochs + a 3-epoch cooldown)
    python -m tsptq.model.train_reference fashion-vit     # ~4 min
    python -m tsptq.model.train_reference robust-ls-mlp2 --threads 1   # robustness models: minutes each
    python -m tsptq.model.train_reference robust-p8-distilled --threads 1
    python -m tsptq.model.train_reference robust-fashion-deep --threads 1
    python -m tsptq.model.train_reference robust-heldout-avg --threads 1    # held out from the method's choice
    python -m tsptq.model.train_reference cifar10-swin --threads 1     # ~1.6-2 h on one core

Writes ``calib/models/<name>.safetensors`` + ``<name>.json`` (config and training record) atomically.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tsptq.data import datasets

from tsptq.model import zoo
from tsptq.model.vit import VisionTransformer

RECIPES = {
    "cifar10-vit": dict(epochs=26, batch=128, lr=1e-3, wd=0.05, warmup=2, pad=4, flip=True, smoothing=0.1,
                        cooldown=3, cooldown_lr=5e-5),
    "fashion-vit": dict(epochs=12, batch=128, lr=2e-3, wd=0.05, warmup=1, pad=2, flip=True, smoothing=0.0),
    # Robustness models (toolchain/tsptq/model/zoo.py): minutes each, recipes unlike the above and unlike each other.
    "robust-ls-mlp2": dict(epochs=6, batch=128, lr=2e-3, wd=0.05, warmup=1, pad=4, flip=True, smoothing=0.2,
                           layer_scale_init=0.1),
    "robust-p8-distilled": dict(epochs=5, batch=64, lr=5e-4, wd=0.1, warmup=1, pad=0, flip=False, smoothing=0.0),
    "robust-fashion-deep": dict(epochs=4, batch=256, lr=4e-3, wd=0.01, warmup=1, pad=0, flip=False, smoothing=0.1),
    "robust-heldout-avg": dict(epochs=5, batch=128, lr=3e-3, wd=0.1, warmup=1, pad=4, flip=True, smoothing=0.0),
    # The tiny Swin (zoo.py): cifar10-vit's recipe shape (cosine with warmup, crop + flip, smoothing) plus a cooldown,
    # shortened to 20 + 2 epochs so that it trains in about 1.5 h on one core (4.2 min per epoch on a 2-core EPYC).
    "cifar10-swin": dict(epochs=20, batch=128, lr=1e-3, wd=0.05, warmup=2, pad=4, flip=True, smoothing=0.1,
                         cooldown=2, cooldown_lr=5e-5),
}


def augment(x: torch.Tensor, pad: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip, vectorized over the batch (x: B,C,H,W)."""
    B, _, H, W = x.shape
    if pad:
        xp = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (B,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (B,), generator=gen)
        rows = (torch.arange(H)[None] + dy[:, None])[:, :, None]  # B,H,1
        cols = (torch.arange(W)[None] + dx[:, None])[:, None, :]  # B,1,W
        x = xp[torch.arange(B)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mask = torch.rand(B, generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x


def evaluate(model: VisionTransformer, data: datasets.ImageSet, batch: int = 500) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i, x in enumerate(datasets.iterate_batches(data.images, model.cfg, batch)):
            correct += (model(x).argmax(-1).numpy() == data.labels[i * batch : i * batch + len(x)]).sum()
    return 100.0 * correct / len(data)


def _optimizer(model: VisionTransformer, lr: float, wd: float) -> torch.optim.AdamW:
    """AdamW, no weight decay on tokens, position embeddings, Swin's relative position bias tables, norms and biases."""
    decay = lambda n, p: (p.ndim >= 2 and "token" not in n and "pos_embed" not in n  # noqa: E731
                          and "relative_position_bias_table" not in n)
    params = list(model.named_parameters())
    return torch.optim.AdamW([{"params": [p for n, p in params if decay(n, p)], "weight_decay": wd},
                              {"params": [p for n, p in params if not decay(n, p)], "weight_decay": 0.0}], lr=lr)


def _run_epochs(model, data, recipe, opt, lr_factor, epochs, gen, label, first_epoch, history, t0):
    """``epochs`` epochs of augmented mini-batch training; test top-1 every 5 epochs and at the end."""
    x_all, y_all, test_set = data
    steps = len(x_all) // recipe["batch"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, epochs * steps))
    for epoch in range(first_epoch, first_epoch + epochs):
        model.train()
        perm = torch.randperm(len(x_all), generator=gen)
        bar = tqdm(range(steps), desc=f"{label} epoch {epoch + 1}", leave=False)
        for step in bar:
            idx = perm[step * recipe["batch"] : (step + 1) * recipe["batch"]]
            x = augment(x_all[idx], recipe["pad"], recipe["flip"], gen)
            loss = F.cross_entropy(model(x), y_all[idx], label_smoothing=recipe["smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if (epoch + 1) % 5 == 0 or epoch + 1 == first_epoch + epochs:
            acc = evaluate(model, test_set)
            minutes = (time.time() - t0) / 60
            history.append({"epoch": epoch + 1, "test_top1": round(float(acc), 2), "minutes": round(minutes, 1)})
            print(f"{label}: epoch {epoch + 1} test top-1 {acc:.2f}% ({minutes:.1f} min)", flush=True)


def train(name: str, seed: int = 0, epochs: int | None = None, resume: bool = False) -> dict:
    """Stage 1: cosine schedule with warmup. Stage 2 (where the recipe has one): a short cooldown at a small
    constant learning rate with a fresh optimizer and its own seed, so it can also resume from a stage-1 checkpoint
    (``resume``) and give the same result as one uninterrupted run."""
    spec = zoo.REFERENCE_MODELS[name]
    recipe = dict(RECIPES[name])
    if epochs is not None:
        recipe["epochs"] = epochs
    train_set, test_set = spec.load_data("train"), spec.load_data("test")
    # Normalized once; augmentation works on tensors.
    data = (datasets.to_model_input(train_set.images, spec.config), torch.as_tensor(train_set.labels), test_set)
    t0 = time.time()
    if resume:
        model = zoo.load_reference(name)
        previous = json.loads(spec.record_path.read_text())
        history = previous["history"]
        stage1_end = history[-1]["epoch"] == recipe["epochs"]  # not already cooled down
        if previous["recipe"]["epochs"] != recipe["epochs"] or previous["seed"] != seed or not stage1_end:
            raise SystemExit(f"{name}: the stored checkpoint is not the end of stage 1 of this recipe and seed")
    else:
        torch.manual_seed(seed)
        np.random.seed(seed)
        model = zoo.build_model(spec.config)
        if "layer_scale_init" in recipe:  # CaiT-style small LayerScale start
            with torch.no_grad():
                for blk in model.blocks:
                    blk.ls1.gamma.fill_(recipe["layer_scale_init"])
                    blk.ls2.gamma.fill_(recipe["layer_scale_init"])
        warm = recipe["warmup"] * (len(data[0]) // recipe["batch"])
        cosine = lambda s, total: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm)))  # noqa: E731
        history = []
        _run_epochs(model, data, recipe, _optimizer(model, recipe["lr"], recipe["wd"]), cosine, recipe["epochs"],
                    torch.Generator().manual_seed(seed), name, 0, history, t0)
    if recipe.get("cooldown"):
        torch.manual_seed(seed + 1)
        _run_epochs(model, data, recipe, _optimizer(model, recipe["cooldown_lr"], recipe["wd"]), lambda s, total: 1.0,
                    recipe["cooldown"], torch.Generator().manual_seed(seed + 1), f"{name} cooldown", recipe["epochs"],
                    history, t0)
    record = {"seed": seed, "recipe": recipe, "history": history, "test_top1": history[-1]["test_top1"],
              "params": sum(p.numel() for p in model.parameters()), "torch": torch.__version__,
              "threads": torch.get_num_threads()}
    zoo.save_reference(name, model, record)
    return record


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=sorted(RECIPES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--resume", action="store_true", help="skip stage 1: continue from the stored stage-1 checkpoint")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(train(args.model, args.seed, args.epochs, args.resume), indent=1))


if __name__ == "__main__":
    main()
