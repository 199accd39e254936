"""Train TinyClassifier on generated shapes images and write `models/tiny_classifier.pt`.

    python -m models.train_classifier [--epochs 12] [--images 6000]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from modelc_build.preprocess import preprocess_image
from modelc_build.recipe_types import Preprocess
from models.shapes import classification_image
from models.tiny_classifier import build_model

TRAIN_SEED = 2
SPEC = Preprocess(height=64, width=64, resize="stretch", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
OUT = Path(__file__).resolve().parent / "tiny_classifier.pt"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.manual_seed(0)
    images = np.zeros((args.images, 3, SPEC.height, SPEC.width), dtype=np.float32)
    labels = np.zeros(args.images, dtype=np.int64)
    for index in range(args.images):
        image, labels[index] = classification_image(TRAIN_SEED, index)
        images[index] = preprocess_image(image, SPEC)[0]
    model = build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    batch = 64
    steps = args.epochs * (args.images // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    rng = np.random.default_rng(0)
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(args.images)
        correct = 0
        for start in range(0, args.images - batch + 1, batch):
            picked = order[start:start + batch]
            x = torch.from_numpy(images[picked])
            x = torch.where(torch.from_numpy(rng.random(batch) < 0.5)[:, None, None, None], x.flip(-1), x)
            y = torch.from_numpy(labels[picked])
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            correct += int((logits.argmax(1) == y).sum())
        print(f"epoch {epoch + 1}/{args.epochs} train accuracy {correct / (args.images // batch * batch):.4f}", flush=True)
    model.eval()
    torch.save(model.state_dict(), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
