"""Train the project's small reference ViTs from scratch, seeded (the committed checkpoints came from this script).

    python -m tsptq.calib.train_reference cifar10-vit     # ~90 min on one core
    python -m tsptq.calib.train_reference fashion-vit     # ~4 min

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

from tsptq.calib import datasets, zoo
from tsptq.vit import VisionTransformer

RECIPES = {
    "cifar10-vit": dict(epochs=22, batch=128, lr=1e-3, wd=0.05, warmup=2, pad=4, flip=True, smoothing=0.1),
    "fashion-vit": dict(epochs=12, batch=128, lr=2e-3, wd=0.05, warmup=1, pad=2, flip=True, smoothing=0.0),
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


def train(name: str, seed: int = 0, epochs: int | None = None) -> dict:
    spec = zoo.REFERENCE_MODELS[name]
    recipe = dict(RECIPES[name])
    if epochs is not None:
        recipe["epochs"] = epochs
    torch.manual_seed(seed)
    np.random.seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train_set, test_set = spec.load_data("train"), spec.load_data("test")
    model = VisionTransformer(spec.config)
    cfg = model.cfg
    x_all = datasets.to_model_input(train_set.images, cfg)  # normalized once; augmentation works on tensors
    y_all = torch.as_tensor(train_set.labels)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "token" not in n and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "token" not in n and "pos_embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe["wd"]}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=recipe["lr"])
    steps_per_epoch = len(x_all) // recipe["batch"]
    total, warm = recipe["epochs"] * steps_per_epoch, recipe["warmup"] * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    t0, history = time.time(), []
    for epoch in range(recipe["epochs"]):
        model.train()
        perm = torch.randperm(len(x_all), generator=gen)
        bar = tqdm(range(steps_per_epoch), desc=f"{name} epoch {epoch + 1}/{recipe['epochs']}", leave=False)
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
        if (epoch + 1) % 5 == 0 or epoch + 1 == recipe["epochs"]:
            acc = evaluate(model, test_set)
            history.append({"epoch": epoch + 1, "test_top1": round(float(acc), 2), "minutes": round((time.time() - t0) / 60, 1)})
            print(f"{name}: epoch {epoch + 1} test top-1 {acc:.2f}% ({(time.time() - t0) / 60:.1f} min)", flush=True)
    record = {"seed": seed, "recipe": recipe, "history": history, "test_top1": history[-1]["test_top1"],
              "params": sum(p.numel() for p in model.parameters()), "torch": torch.__version__}
    zoo.save_reference(name, model, record)
    return record


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=sorted(RECIPES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(train(args.model, args.seed, args.epochs), indent=1))


if __name__ == "__main__":
    main()
