#!/usr/bin/env python3
"""Train GPT-2 small on text that ships with Python, with its attention switchable between flashattn,
PyTorch's standard (math) attention and PyTorch's scaled_dot_product_attention.

The model is GPT-2 small (12 layers, 12 heads, width 768) over a byte-level vocabulary (256 tokens, so no
tokenizer is needed), trained on the standard library's sources and docs (the .py, .txt and .rst files under
sysconfig's stdlib path, in sorted order). The three attentions see the same initial weights (--seed) and
the same batches in the same order (--data-seed); only the attention differs.

Each step writes a CSV row: loss, step time, tokens/s and peak device memory (torch's allocator plus the
flashattn library's own workspace). The run stops after --steps steps or --max-seconds of training after
the first step (which compiles kernels once), whichever comes first, so a time budget is kept on any GPU.

  python3 examples/train_gpt2.py --attention flashattn --context 1024 --batch 16 --steps 300 --csv run.csv
"""
import argparse
import csv
import math
import pathlib
import sys
import sysconfig
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ATTENTIONS = ("flashattn", "math", "sdpa")


def corpus(max_bytes):
    """The standard library's sources and docs as one byte string, files in sorted order."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".txt", ".rst") and p.is_file()
                       and "site-packages" not in p.parts):
        data = path.read_bytes()
        parts.append(data)
        total += len(data)
        if total >= max_bytes:
            break
    return torch.frombuffer(bytearray(b"".join(parts)[:max_bytes]), dtype=torch.uint8)


class Batches:
    """Random windows of the corpus, drawn from their own generator so every run sees the same ones."""

    def __init__(self, data, batch, context, seed, device):
        self.data, self.batch, self.context, self.device = data, batch, context, device
        self.gen = torch.Generator().manual_seed(seed)

    def next(self):
        starts = torch.randint(len(self.data) - self.context - 1, (self.batch,), generator=self.gen)
        rows = torch.stack([self.data[s:s + self.context + 1] for s in starts.tolist()]).long()
        rows = rows.to(self.device, non_blocking=True)
        return rows[:, :-1], rows[:, 1:]


def standard_attention(q, k, v, causal_mask, dropout_p):
    """Attention with the scores in memory, q, k, v [B, H, S, D]: the baseline FlashAttention is compared to."""
    s = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    s = s.masked_fill(causal_mask[: q.shape[2], : q.shape[2]], float("-inf"))
    p = torch.softmax(s.float(), dim=-1).to(q.dtype)
    return F.dropout(p, dropout_p) @ v


class Attention(nn.Module):
    def __init__(self, width, heads, context, kind, dropout):
        super().__init__()
        self.heads, self.kind, self.dropout = heads, kind, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        if kind == "math":
            mask = torch.ones(context, context, dtype=torch.bool).triu(1)
            self.register_buffer("causal_mask", mask, persistent=False)
        if kind == "flashattn":
            from flashattn import flash_attn_qkvpacked_func
            self.flash = flash_attn_qkvpacked_func

    def forward(self, x):
        b, s, c = x.shape
        qkv = self.qkv(x).view(b, s, 3, self.heads, c // self.heads)  # [B, S, 3, H, D]: flash_attn's layout
        p = self.dropout if self.training else 0.0
        if self.kind == "flashattn":
            y = self.flash(qkv, dropout_p=p, causal=True)  # [B, S, H, D], read and written in place
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # [B, H, S, D] views
            if self.kind == "sdpa":
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
            else:
                y = standard_attention(q, k, v, self.causal_mask, p)
            y = y.transpose(1, 2)
        return self.proj(y.reshape(b, s, c))


class Block(nn.Module):
    def __init__(self, width, heads, context, kind, dropout):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = Attention(width, heads, context, kind, dropout)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * width, width))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT2(nn.Module):
    def __init__(self, layers, heads, width, context, kind, dropout, vocab=256):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads, context, kind, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied, as GPT-2
        for name, p in self.named_parameters():  # GPT-2's initialisation
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def learning_rate(step, args):
    """Linear warm-up, then cosine decay to a tenth over --steps."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * t)))


def flashattn_peak_bytes():
    if "flashattn" not in sys.modules:
        return 0
    return sum(peak for _, peak in sys.modules["flashattn"].memory_stats().values())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attention", choices=ATTENTIONS, default="flashattn")
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--max-seconds", type=float, default=float("inf"),
                    help="stop after this long, counted from the end of the first step")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--dropout", type=float, default=0.0, help="attention dropout")
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0, help="initial weights (and dropout)")
    ap.add_argument("--data-seed", type=int, default=0, help="batch order")
    ap.add_argument("--corpus-bytes", type=int, default=64 << 20)
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="autocast dtype of the matmuls")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--csv", default="-", help="per-step CSV (default stdout)")
    args = ap.parse_args()

    device = torch.device(args.device)
    data = corpus(args.corpus_bytes)
    torch.manual_seed(args.seed)
    model = GPT2(args.layers, args.heads, args.width, args.context, args.attention, args.dropout).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=device.type == "cuda")
    batches = Batches(data, args.batch, args.context, args.data_seed, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    cuda = device.type == "cuda"

    out = sys.stdout if args.csv == "-" else open(args.csv, "w", newline="")
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    out.write(f"# train_gpt2 {' '.join(sys.argv[1:])}\n# device={name} torch={torch.__version__} "
              f"corpus_bytes={len(data)} params={sum(p.numel() for p in model.parameters())}\n")
    log = csv.writer(out)
    log.writerow(["attention", "context", "batch", "step", "loss", "lr", "step_ms", "tokens_per_s",
                  "torch_peak_bytes", "flashattn_peak_bytes", "peak_bytes"])
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(args.steps):
        lr = learning_rate(step, args)
        for group in opt.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        x, y = batches.next()
        with autocast:
            logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_value = loss.item()  # waits for the step's work
        if cuda:
            torch.cuda.synchronize(device)
        ms = (time.perf_counter() - t0) * 1e3
        torch_peak = torch.cuda.max_memory_allocated(device) if cuda else 0
        fa_peak = flashattn_peak_bytes()
        log.writerow([args.attention, args.context, args.batch, step, f"{loss_value:.5f}", f"{lr:.3e}",
                      f"{ms:.3f}", f"{args.batch * args.context / ms * 1e3:.0f}", torch_peak, fa_peak,
                      torch_peak + fa_peak])
        out.flush()
        if not math.isfinite(loss_value):
            sys.exit(f"train_gpt2: loss is {loss_value} at step {step}")
        if step == 0:  # the budget starts after the first step, which compiles kernels once
            started = time.perf_counter()
        elif time.perf_counter() - started > args.max_seconds:
            break
    if out is not sys.stdout:
        out.close()


if __name__ == "__main__":
    main()
