"""A small streaming model with a recurrent state, shaped like the voice-activity and keyword models
people deploy: each call takes one chunk of audio `x` [batch, 64], the state `[layers, batch, hidden]`
(batch on axis 1) the previous call returned, and a sample rate; it returns a probability and the
new state. `forward(x, state, sr: int)` takes the sample rate as a Python int (as TorchScript
models do); `ScalarRateStream` takes it as a scalar tensor (as their ONNX exports do).

`make_stream` writes a tone-in-noise audio stream cut into chunks (the task: is a tone present), and
`train` fits the model to it in a few seconds, so the state carries something real.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

CHUNK = 64
HIDDEN = 16
LAYERS = 2


class GatedCell(nn.Module):
    """A GRU cell written out (nn.GRUCell's scripted form does not export to ONNX)."""

    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.from_input = nn.Linear(inputs, 3 * hidden)
        self.from_state = nn.Linear(hidden, 3 * hidden)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        a, b, size = self.from_input(x), self.from_state(h), self.hidden
        reset = torch.sigmoid(a[:, :size] + b[:, :size])
        update = torch.sigmoid(a[:, size:2 * size] + b[:, size:2 * size])
        candidate = torch.tanh(a[:, 2 * size:] + reset * b[:, 2 * size:])
        return (1 - update) * candidate + update * h


class TinyStream(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(CHUNK, 32), nn.ReLU())
        self.cells = nn.ModuleList([GatedCell(32, HIDDEN), GatedCell(HIDDEN, HIDDEN)])
        self.head = nn.Linear(HIDDEN, 1)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.cells[0](self.features(x), state[0])
        second = self.cells[1](first, state[1])
        return torch.sigmoid(self.head(second)), torch.stack((first, second))

    def forward(self, x: torch.Tensor, state: torch.Tensor, sr: int = 16000) -> tuple[torch.Tensor, torch.Tensor]:
        return self.step(x * (16000.0 / sr), state)


class ScalarRateStream(TinyStream):
    """The same model with the sample rate as a scalar int64 tensor input (ONNX exports)."""

    def forward(self, x: torch.Tensor, state: torch.Tensor, sr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return self.step(x * (16000.0 / sr.to(torch.float32)), state)


def build_model() -> TinyStream:
    return TinyStream()


def build_scalar_rate_model() -> ScalarRateStream:
    return ScalarRateStream()


def make_stream(chunks: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`chunks` consecutive chunks [chunks, 64] of noise with tone bursts, and per chunk 1 where a
    burst has been going on for at least two chunks (so the state matters)."""
    rng = np.random.default_rng(seed)
    audio = rng.normal(0, 0.3, chunks * CHUNK).astype(np.float32)
    labels = np.zeros(chunks, dtype=np.float32)
    start = 0
    while start < chunks:
        length = int(rng.integers(3, 12))
        if rng.random() < 0.5:
            t = np.arange(length * CHUNK)
            audio[start * CHUNK:(start + length) * CHUNK][: len(t)] += 0.5 * np.sin(
                2 * np.pi * rng.uniform(300, 3000) / 16000 * t)[: len(audio[start * CHUNK:(start + length) * CHUNK])]
            labels[start + 2:start + length] = 1
        start += length
    return audio.reshape(chunks, CHUNK), labels


def train(model: TinyStream, steps: int = 300, seed: int = 0) -> TinyStream:
    torch.manual_seed(seed)
    x, y = make_stream(4096, seed)
    streams = torch.from_numpy(x).reshape(16, 256, CHUNK)  # 16 streams in parallel
    targets = torch.from_numpy(y).reshape(16, 256)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps // 10):
        state = torch.zeros(LAYERS, 16, HIDDEN)
        for start in range(0, 256, 32):  # truncated backpropagation through time
            state = state.detach()
            loss = torch.zeros(())
            for t in range(start, start + 32):
                probability, state = model(streams[:, t], state)
                loss = loss + nn.functional.binary_cross_entropy(probability[:, 0], targets[:, t])
            optimizer.zero_grad()
            (loss / 32).backward()
            optimizer.step()
    return model.eval()


if __name__ == "__main__":  # how models/tiny_stream.pt was made: python -m models.tiny_stream
    from pathlib import Path

    torch.save(train(TinyStream()).state_dict(), Path(__file__).with_name("tiny_stream.pt"))
