"""SFT throughput: stock TRL `SFTTrainer` defaults vs the InverseCoder recipe, side by side.

Same synthetic code-instruction length mix for every variant (prompt 60-250 tokens, response lognormal
around 350 tokens, total capped at --max-length; pre-tokenized random ids with a completion mask), same
model shape, random weights (throughput does not depend on them). Each variant runs in its own process
(so CPU peak RSS is its own), trains on the same documents, and reports real (non-padding) tokens/s after
--warmup-steps, padding share, MFU (GPU only; 6N + 6*layers*hidden*mean_doc_len FLOPs per token vs
--peak-tflops) and peak memory (cuda max_memory_allocated, or the process's max RSS on CPU).

    python benchmarks/train_throughput.py                                  # tiny model on CPU, ~2 minutes
    python benchmarks/train_throughput.py --model-shape deepseek-coder-1.3b --docs 2048   # one GPU

Variants: `stock` = `trl.SFTConfig` defaults (padded batches of 16, sdpa); `recipe` = our automatic choice
for this machine (`trainers/speed.py`), packed rows holding the same 16 documents per step. A variant may force
recipe settings after a colon: `recipe:kernels=none`, `recipe:packing=true`, `recipe:compile=true`,
`recipe:attn=sdpa`, `recipe:pad=N` (pad each packed micro-batch to a multiple of N tokens; the recipe pads to
rows x max-length under flex attention or compile, see trainers/speed.py), `recipe:rows=8` (8 packed rows per step:
the recipe's own micro-batch, `train.per_device_batch_size`, instead of 16 documents; the global batch is kept by
accumulation in training).
Default: `stock,recipe` plus `recipe:packing=true` on a CPU (where the recipe does not pack).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=2048,
    ),
    "deepseek-coder-1.3b": dict(
        hidden_size=2048,
        intermediate_size=5504,
        num_hidden_layers=24,
        num_attention_heads=16,
        num_key_value_heads=16,
        vocab_size=32256,
        rope_theta=100000.0,
    ),
}


def documents(n: int, max_length: int, vocab: int, scale: float = 1.0, seed: int = 0) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        prompt = max(4, int(rng.integers(60, 251) * scale))
        response = max(8, int(rng.lognormal(mean=np.log(350), sigma=0.6) * scale))
        total = min(prompt + response, max_length)
        ids = rng.integers(3, vocab, size=total).tolist()
        rows.append({"input_ids": ids, "completion_mask": [0] * prompt + [1] * (total - prompt)})
    return rows


SETTINGS = {"packing": "packing", "attn": "attn_implementation", "kernels": "kernels", "compile": "torch_compile"}
EXTRA = {"rows", "pad"}


def parse_variant(spec: str) -> tuple[str, dict[str, str]]:
    """`recipe:kernels=none:rows=8` -> ("recipe", {"kernels": "none", "rows": "8"})."""
    name, *pairs = spec.split(":")
    if name not in ("stock", "recipe") or (name == "stock" and pairs):
        raise SystemExit(f"unknown variant {spec!r}: stock, or recipe[:key=value...]")
    forced = dict(pair.split("=", 1) for pair in pairs)
    unknown = set(forced) - set(SETTINGS) - EXTRA
    if unknown:
        raise SystemExit(f"unknown setting(s) {sorted(unknown)} in {spec!r}: {sorted(SETTINGS)} or {sorted(EXTRA)}")
    return name, forced


def run_variant(opts: argparse.Namespace) -> dict:
    import datasets
    import torch
    import trl
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, TrainerCallback

    from inversecoder.core.config import TrainConfig
    from inversecoder.tiny_model import build_tokenizer
    from inversecoder.trainers import speed

    torch.manual_seed(0)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    gpu = torch.cuda.is_available()
    shape = SHAPES[opts.model_shape]
    config = LlamaConfig(max_position_embeddings=max(4096, opts.max_length), tie_word_embeddings=False, **shape)
    tokenizer: PreTrainedTokenizerFast = build_tokenizer(2048)  # only pad/eos matter: data is pre-tokenized
    rows = documents(opts.docs, opts.max_length, shape["vocab_size"], opts.length_scale)
    data = datasets.Dataset.from_list(rows)

    common = dict(
        output_dir=tempfile.mkdtemp(),
        report_to="none",
        logging_steps=1000,
        save_strategy="no",
        max_length=opts.max_length,
        num_train_epochs=1,
        seed=0,
        dataloader_num_workers=0,
        use_cpu=not gpu,
        bf16=gpu,
        completion_only_loss=True,
    )
    attention = "sdpa"
    name, forced = parse_variant(opts.variant)
    if name == "stock":
        args = trl.SFTConfig(per_device_train_batch_size=opts.batch_size, **common)
    else:
        overrides: dict[str, Any] = {SETTINGS[k]: v for k, v in forced.items() if k in SETTINGS}
        plan = speed.choose(TrainConfig(**overrides))
        kwargs = speed.sft_kwargs(plan)
        attention = kwargs.pop("model_init_kwargs")["attn_implementation"]
        rows_per_step = opts.batch_size
        if "rows" in forced:
            rows_per_step = int(forced["rows"])
        elif plan.packing:  # same documents per step as the stock batch
            lengths = [len(r["input_ids"]) for r in rows]
            rows_per_step, _ = speed.packed_batch(
                opts.batch_size, opts.batch_size, 1, speed.documents_per_row(lengths, opts.max_length)
            )
        # one shape for every step under compiled kernels, as the recipe does (speed.static_length)
        pad = int(forced["pad"]) if "pad" in forced else speed.static_length(plan, rows_per_step, opts.max_length)
        if pad:
            kwargs["pad_to_multiple_of"] = pad
        args = trl.SFTConfig(per_device_train_batch_size=rows_per_step, **common, **kwargs)
    # fp32 weights with bf16 autocast on a GPU, as TRL's defaults train a model built from a config;
    # built on the GPU directly (initializing 1.3B parameters on the CPU takes longer than the run)
    with torch.device("cuda" if gpu else "cpu"):
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attention, dtype=torch.float32)
    params = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()

    marks: list[float] = []
    tokens: list[tuple[int, int]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            if gpu:
                torch.cuda.synchronize()
            marks.append(time.perf_counter())
            if opts.step_log:
                print(
                    f"step {len(marks)} at {marks[-1] - start:.1f} s, {tokens[-1][0]} tokens",
                    file=sys.stderr,
                    flush=True,
                )

    trainer = trl.SFTTrainer(
        model=model, args=args, train_dataset=data, processing_class=tokenizer, callbacks=[Clock()]
    )
    collate = trainer.data_collator

    def counting(examples):
        batch = collate(examples)
        if "attention_mask" in batch:
            real = int(batch["attention_mask"].sum())
        else:  # padding-free: one row, padded only at its end (pad_to_multiple_of); document ids are >= 3
            real = int((batch["input_ids"][0] != tokenizer.pad_token_id).nonzero().max()) + 1
        tokens.append((real, int(batch["input_ids"].numel())))
        return batch

    trainer.data_collator = counting
    speed.reset_peak_memory()
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    warm = min(opts.warmup_steps, len(marks) - 1)
    timed_tokens = sum(real for real, _ in tokens[warm + 1 : len(marks)])
    seconds = marks[-1] - marks[warm] if warm >= 0 and len(marks) > warm + 1 else total
    rate = timed_tokens / seconds if seconds > 0 and timed_tokens else sum(r for r, _ in tokens) / total
    mean_doc = sum(len(r["input_ids"]) for r in rows) / len(rows)
    flops_per_token = 6 * (params - embedding) + 6 * shape["num_hidden_layers"] * shape["hidden_size"] * mean_doc
    result = {
        "variant": opts.variant,
        "device": torch.cuda.get_device_name() if gpu else "cpu",
        "attention": attention,
        "packing": bool(args.packing),
        "rows_per_step": args.per_device_train_batch_size,
        "steps": len(marks),
        "tokens_per_s": rate,
        "padding_share": 1 - sum(r for r, _ in tokens) / max(1, sum(n for _, n in tokens)),
        "mfu": flops_per_token * rate / (opts.peak_tflops * 1e12) if gpu else None,
        "seconds": total,
        "final_loss": trainer.state.log_history[-1].get("train_loss"),
        **speed.peak_memory(),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--docs", type=int, default=None, help="documents per variant (CPU 96, GPU 2048)")
    parser.add_argument("--batch-size", type=int, default=16, help="documents per step (stock TRL batch: 16)")
    parser.add_argument("--max-length", type=int, default=None, help="CPU 1024, GPU 2048")
    parser.add_argument(
        "--length-scale",
        type=float,
        default=None,
        help="scale of the length mix (CPU 0.25 so the tiny run stays under 2 minutes, GPU 1.0)",
    )
    parser.add_argument("--warmup-steps", type=int, default=None, help="steps left out of the rate (CPU 1, GPU 5)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak for MFU (H100/H200: 989)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--variants", default=None, help="comma-separated (default: stock,recipe, plus recipe:packing=true on a CPU)"
    )
    parser.add_argument("--variant-timeout", type=float, default=None, help="seconds before a variant is abandoned")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--step-log", action="store_true", help="print each step's time (to see compile vs steady state)"
    )
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    import torch

    gpu = torch.cuda.is_available()
    opts.docs = opts.docs or (2048 if gpu else 64)
    opts.max_length = opts.max_length or (2048 if gpu else 512)
    opts.length_scale = opts.length_scale or (1.0 if gpu else 0.25)
    opts.warmup_steps = opts.warmup_steps if opts.warmup_steps is not None else (5 if gpu else 1)
    if opts.variant:
        print("RESULT " + json.dumps(run_variant(opts)))
        return
    variants = (opts.variants or ("stock,recipe" if gpu else "stock,recipe,recipe:packing=true")).split(",")
    for variant in variants:
        parse_variant(variant)  # refuse a typo before minutes of training
    results = []
    for variant in variants:
        cmd = [
            sys.executable,
            __file__,
            "--variant",
            variant,
            "--model-shape",
            opts.model_shape,
            "--docs",
            str(opts.docs),
            "--batch-size",
            str(opts.batch_size),
            "--max-length",
            str(opts.max_length),
            "--warmup-steps",
            str(opts.warmup_steps),
            "--length-scale",
            str(opts.length_scale),
            "--peak-tflops",
            str(opts.peak_tflops),
            "--threads",
            str(opts.threads),
        ] + (["--step-log"] if opts.step_log else [])
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            child = subprocess.Popen(
                cmd, stdout=out, stderr=err, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}
            )
            try:
                child.wait(timeout=opts.variant_timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        line = next((x for x in stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            why = f"abandoned after {opts.variant_timeout:.0f} s" if child.returncode == -9 else "failed"
            print(f"{variant}: {why}; its last output:\n{stderr[-3000:]}", flush=True)
            continue
        results.append(json.loads(line[7:]))
        print(f"{variant}: {results[-1]['tokens_per_s']:.0f} tokens/s", flush=True)
        if opts.json:
            Path(opts.json).write_text(json.dumps(results, indent=1))
    if not results:
        sys.exit(1)
    base = next((r for r in results if r["variant"] == "stock"), results[0])
    print(
        f"model shape {opts.model_shape}, {opts.docs} documents, length scale {opts.length_scale}, "
        f"max length {opts.max_length}, "
        f"{opts.batch_size} documents per step, device {base['device']}"
    )
    width = max(16, *(len(r["variant"]) + 2 for r in results))
    print(
        f"{'variant':<{width}}{'attention':<16}{'packing':<9}{'tokens/s':>10}{'ratio':>7}{'padding':>9}{'MFU':>7}"
        f"{'peak GiB':>10}  {'peak kind':<26}{'loss':>8}"
    )
    for r in results:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        print(
            f"{r['variant']:<{width}}{r['attention']:<16}{r['packing']!s:<9}{r['tokens_per_s']:>10.0f}"
            f"{r['tokens_per_s'] / base['tokens_per_s']:>6.2f}x{100 * r['padding_share']:>8.1f}%{mfu:>7}"
            f"{r['peak_memory_gib']:>10.2f}  {r['peak_memory_kind']:<26}{r['final_loss'] or float('nan'):>8.4f}"
        )


if __name__ == "__main__":
    main()
