"""The embedded backend: a `transformers` model in this process (the default; runs on a laptop).

Fast where it matters:
- batches are length-sorted and sized by a token budget, so little compute goes to padding;
- scoring computes the logits of the last position only (`logits_to_keep=1`);
- generation is a KV-cached decode loop that drops finished rows as it goes.
Reproducible: every sampled row draws from its own seeded `torch.Generator`, so a completion does
not depend on which other requests share its batch (a resumed run reproduces a fresh one).
Data-parallel: with several GPUs, one replica per GPU runs the planned batches (`replicas.py`); a batch's
output does not depend on which replica runs it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from inversecoder.core.backends.base import (
    Backend,
    BackendInfo,
    Completion,
    GenerationRequest,
    SamplingParams,
    YesNoScore,
    filled,
    fit_generations,
    fit_scorings,
    run_halving_on_oom,
)
from inversecoder.core.backends.replicas import Replica, load_replicas, replica_devices, spread
from inversecoder.core.errors import ConfigError, UserError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def local_revision(folder: Path) -> str:
    """A content hash of a local model folder (config + weights), standing in for a Hub commit sha."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.suffix in _WEIGHT_SUFFIXES or path.name == "config.json"):
            digest.update(path.name.encode())
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 23), b""):
                    digest.update(chunk)
    return "local-" + digest.hexdigest()[:16]


def resolve_model(model: str, revision: str | None) -> tuple[Path, str]:
    """A local folder as is, or a Hub id through `snapshot_download` (the Hub cache; offline-aware).
    Returns the folder and the exact revision (commit sha or local content hash)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ConfigError(f"model folder {folder} has no config.json")
        return folder, local_revision(folder)
    if folder.exists() or model.startswith((".", "/")) or model.count("/") > 1:
        raise ConfigError(f"model not found: {model} is neither a model folder nor a Hub model id")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        path = Path(
            snapshot_download(
                model,
                revision=revision,
                # README.md: the card, whose license the cards of what is made from this model carry over
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.py", "README.md"],
            )
        )
    except (LocalEntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError, OSError) as error:
        raise ConfigError(
            f"cannot get model '{model}' from the Hub (offline or not found): {type(error).__name__}"
        ) from None
    return path, path.name  # snapshots/<commit sha>


def resolve_answer_token_ids(tokenizer, word: str, scheme: str = "variants") -> list[int]:
    """Token ids that spell `word` as one first-response token (`generator.answer_tokens`): `variants`, every
    word-initial spelling ("Yes", " Yes", "ĠYes", "▁Yes"); `single`, the one id the paper's code read
    (`tokenizer(word)['input_ids'][1]`: the word's token after BOS), here the word's token after the special
    tokens, whatever they are. A tokenizer without one is an error, never a fallback value."""
    if scheme == "single":
        special = set(tokenizer.all_special_ids)
        pieces = [i for i in tokenizer(word, add_special_tokens=True)["input_ids"] if i not in special]
        if len(pieces) != 1:
            raise UserError(
                f"the tokenizer spells {word!r} as {len(pieces)} tokens: generator.answer_tokens single needs one; "
                "add it as a token (and resize the embeddings) or use another model"
            )
        return pieces
    ids: set[int] = set()
    for variant in (word, " " + word):
        encoded = tokenizer.encode(variant, add_special_tokens=False)
        if len(encoded) == 1:
            ids.add(encoded[0])
    vocab = tokenizer.get_vocab()
    for piece in (word, "Ġ" + word, "▁" + word):
        if piece in vocab:
            ids.add(vocab[piece])
    if not ids:
        raise UserError(
            f"the tokenizer has no single token for {word!r}: the Yes/No score would be meaningless; "
            "add it as a token (and resize the embeddings) or use another model"
        )
    return sorted(ids)


class TransformersBackend(Backend):
    """A causal LM loaded with `AutoModelForCausalLM`, one replica per device (`replicas.replica_devices`);
    weights load on first use (cache hits need none)."""

    def __init__(
        self,
        model: str,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_tokens: int = 32768,
        max_batch_size: int = 256,
        max_context: int | None = None,
        replicas: int | None = None,
        answer_tokens: str = "variants",
    ):
        from transformers import AutoConfig, AutoTokenizer

        self.name = model
        self.path, self.revision = resolve_model(model, revision)
        self.config = AutoConfig.from_pretrained(self.path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self.max_context = max_context or getattr(self.config, "max_position_embeddings", None) or 4096
        self._device_name = device
        self._dtype_name = dtype
        self._replica_count = replicas
        self._replicas: list[Replica] = []
        self._answer_ids: dict[str, list[int]] | None = None
        self.answer_tokens = answer_tokens
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        eos = self.tokenizer.eos_token_id
        self.eos_ids = {eos} if eos is not None else set()
        generation_config = self.path / "generation_config.json"
        if generation_config.is_file():
            extra = json.loads(generation_config.read_text()).get("eos_token_id")
            self.eos_ids |= set(extra if isinstance(extra, list) else [extra] if extra is not None else [])

    # -- protocol -------------------------------------------------------------------------------
    def info(self) -> BackendInfo:
        import torch
        import transformers

        return BackendInfo(
            backend="transformers",
            model=self.name,
            revision=self.revision,
            max_context=self.max_context,
            details={"transformers": transformers.__version__, "torch": torch.__version__},
        )

    def plan_batches(self, prompts: Sequence[str], new_tokens: int) -> list[list[int]]:
        """Length-sorted batches whose padded size (rows x (longest prompt + new tokens)) fits the budget
        (the same whatever the number of replicas: they are planned before they are spread)."""
        return self._plan(self.tokenizer, prompts, new_tokens)

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[Completion]:
        """One call runs on the first replica; the batch streams (`generate_batches`) use them all."""
        return self._generate_on(self._load_replicas()[0], requests, params)

    def score_yes_no(self, prompts: Sequence[str]) -> list[YesNoScore]:
        return self._score_on(self._load_replicas()[0], prompts)

    def generate_batches(
        self, requests: Sequence[GenerationRequest], batches: Sequence[Sequence[int]], params: SamplingParams
    ) -> Iterator[tuple[int, list[Completion]]]:
        """The planned batches spread over the replicas, each yielded with its position when done (a batch
        that runs out of memory is halved on its replica)."""

        def run(replica: Replica, batch: Sequence[int]) -> list[Completion]:
            return run_halving_on_oom(
                lambda b: self._generate_on(replica, [requests[i] for i in b], params), list(batch), Completion.failed
            )

        return spread(self._load_replicas(), run, batches)

    def score_batches(
        self, prompts: Sequence[str], batches: Sequence[Sequence[int]]
    ) -> Iterator[tuple[int, list[YesNoScore]]]:
        """`generate_batches` for Yes/No scores."""

        def run(replica: Replica, batch: Sequence[int]) -> list[YesNoScore]:
            return run_halving_on_oom(
                lambda b: self._score_on(replica, [prompts[i] for i in b]), list(batch), YesNoScore.failed
            )

        replicas = self._load_replicas()
        self.answer_token_ids()  # resolved here, before the threads read it
        return spread(replicas, run, batches)

    def answer_token_ids(self) -> dict[str, list[int]]:
        """The token ids whose logits make the Yes/No score (resolved from the tokenizer, once)."""
        if self._answer_ids is None:
            self._answer_ids = {
                "yes": resolve_answer_token_ids(self.tokenizer, "Yes", self.answer_tokens),
                "no": resolve_answer_token_ids(self.tokenizer, "No", self.answer_tokens),
            }
        return self._answer_ids

    def close(self) -> None:
        """Drop the replicas (their GPU memory goes back before training needs it)."""
        on_gpu = any(replica.device.type == "cuda" for replica in self._replicas)
        self._replicas = []
        if on_gpu:
            import torch

            torch.cuda.empty_cache()

    # -- internals ------------------------------------------------------------------------------
    def _plan(self, tokenizer, prompts: Sequence[str], new_tokens: int) -> list[list[int]]:
        if not prompts:
            return []
        lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: (lengths[i], i))
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            width = lengths[i] + new_tokens
            if current and ((len(current) + 1) * width > self.batch_tokens or len(current) >= self.max_batch_size):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def _generate_on(
        self, replica: Replica, requests: Sequence[GenerationRequest], params: SamplingParams
    ) -> list[Completion]:
        def encode(text: str) -> list[int]:
            return replica.tokenizer.encode(text, add_special_tokens=True)

        results, encoded, runnable = fit_generations(encode, requests, self.max_context, params.max_new_tokens)
        # Callers usually pass one planned batch; a longer list is split so memory stays bounded.
        for batch in self._plan(replica.tokenizer, [requests[i].prompt for i in runnable], params.max_new_tokens):
            outputs = self._decode_loop(
                replica, [encoded[j] for j in batch], [requests[runnable[j]].seed for j in batch], params
            )
            for j, output in zip(batch, outputs, strict=True):
                results[runnable[j]] = output
        return filled(results)

    def _score_on(self, replica: Replica, prompts: Sequence[str]) -> list[YesNoScore]:
        import torch

        def encode(text: str) -> list[int]:
            return replica.tokenizer.encode(text, add_special_tokens=True)

        model, device = replica.model, replica.device
        results, encoded, runnable = fit_scorings(encode, prompts, self.max_context)
        answers = self.answer_token_ids()
        yes_ids = torch.tensor(answers["yes"], device=device)
        no_ids = torch.tensor(answers["no"], device=device)
        for batch in self._plan(replica.tokenizer, [prompts[i] for i in runnable], 1):
            with torch.inference_mode():
                input_ids, attention_mask, position_ids = self._left_pad([encoded[j] for j in batch], device)
                logits = (
                    model(
                        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=1
                    )
                    .logits[:, -1, :]
                    .float()
                )
                log_yes = torch.logsumexp(logits[:, yes_ids], dim=-1)
                log_no = torch.logsumexp(logits[:, no_ids], dim=-1)
                scores = torch.sigmoid(log_yes - log_no).tolist()
                mass = torch.exp(torch.logaddexp(log_yes, log_no) - torch.logsumexp(logits, dim=-1)).tolist()
            for row, j in enumerate(batch):
                results[runnable[j]] = YesNoScore(scores[row], mass[row], len(encoded[j]))
        return filled(results)

    def _load(self) -> PreTrainedModel:
        """The first replica's model (loading them all on first use)."""
        return self._load_replicas()[0].model

    def _dtype(self, device: torch.device) -> torch.dtype:
        import torch

        if self._dtype_name == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        named = getattr(torch, self._dtype_name, None)
        if not isinstance(named, torch.dtype):
            raise ConfigError(f"generator.dtype must be auto, bfloat16, float16 or float32, got '{self._dtype_name}'")
        return named

    def _load_replicas(self) -> list[Replica]:
        """Load the weights once per replica, on first use (a run served from the cache never loads them); a model
        that does not fit the smallest GPU is refused before any weight is read."""
        if self._replicas:
            return self._replicas
        import torch

        devices = [
            torch.device(name)
            for name in replica_devices(self._device_name, self._replica_count, torch.cuda.device_count())
        ]
        replicas = load_replicas(
            self.path, self.name, self.config, self.tokenizer, devices, self._dtype(devices[0]), self.max_context
        )
        # The KV cache argument was renamed (past_key_values -> cache) in transformers 5.2x; the cache
        # object is updated in place, so passing it under the right name is all that differs.
        parameters = inspect.signature(replicas[0].model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in parameters else "past_key_values"
        self.device = devices[0]
        self._replicas = replicas
        return replicas

    def _left_pad(self, encoded: list[list[int]], device: torch.device):
        import torch

        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return input_ids.to(device), attention_mask.to(device), position_ids.to(device)

    def _decode_loop(
        self, replica: Replica, encoded: list[list[int]], seeds: list[int], params: SamplingParams
    ) -> list[Completion]:
        """Batched KV-cached decoding with per-row seeded sampling, repetition penalty, top-p and stop strings."""
        import torch
        from transformers import DynamicCache

        model, device, tokenizer = replica.model, replica.device, replica.tokenizer
        rows = len(encoded)
        vocab = model.get_output_embeddings().weight.shape[0]
        generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]
        generated: list[list[int]] = [[] for _ in range(rows)]
        finish = ["length"] * rows
        stop_window = max((len(s) for s in params.stop), default=0) + 8
        active = list(range(rows))  # original row of each batch position
        with torch.inference_mode():
            input_ids, attention_mask, position_ids = self._left_pad(encoded, device)
            seen = torch.zeros((rows, vocab), dtype=torch.bool, device=device)
            if params.repetition_penalty != 1.0:
                for row, ids in enumerate(encoded):
                    seen[row, torch.tensor(ids, device=device)] = True
            cache = DynamicCache(config=model.config)
            out = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_kwarg: cache},
            )
            logits = out.logits[:, -1, :].float()
            next_position = position_ids[:, -1:] + 1
            for _step in range(params.max_new_tokens):
                tokens = self._choose(logits, seen, [generators[r] for r in active], params)
                keep = []
                for pos, row in enumerate(active):
                    token = tokens[pos]
                    if token in self.eos_ids:
                        finish[row] = "eos"
                        continue
                    generated[row].append(token)
                    if params.stop and any(s in tokenizer.decode(generated[row][-stop_window:]) for s in params.stop):
                        finish[row] = "stop"
                        continue
                    keep.append(pos)
                if not keep or _step == params.max_new_tokens - 1:
                    break
                step_tokens = torch.tensor(tokens, device=device).unsqueeze(1)
                if len(keep) < len(active):  # drop finished rows from the batch and the KV cache
                    index = torch.tensor(keep, device=device)
                    cache.batch_select_indices(index)
                    step_tokens, attention_mask = step_tokens[index], attention_mask[index]
                    next_position, seen = next_position[index], seen[index]
                    active = [active[pos] for pos in keep]
                if params.repetition_penalty != 1.0:
                    seen.scatter_(1, step_tokens, True)
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(active), 1))], dim=1)
                out = model(
                    input_ids=step_tokens,
                    attention_mask=attention_mask,
                    position_ids=next_position,
                    use_cache=True,
                    **{self._cache_kwarg: cache},
                )
                logits = out.logits[:, -1, :].float()
                next_position = next_position + 1
        completions = []
        for row in range(rows):
            text = tokenizer.decode(generated[row], skip_special_tokens=True)
            assert isinstance(text, str)  # one sequence decodes to one string
            if finish[row] == "stop":
                cut = min((text.find(s) for s in params.stop if s in text), default=len(text))
                text = text[:cut]
            completions.append(Completion(text, finish[row], len(encoded[row]), len(generated[row])))
        return completions

    @staticmethod
    def _choose(logits, seen, generators, params: SamplingParams) -> list[int]:
        """HF's order: repetition penalty, then temperature, then top-p; one seeded draw per row."""
        import torch

        if params.repetition_penalty != 1.0:
            penalized = torch.where(logits < 0, logits * params.repetition_penalty, logits / params.repetition_penalty)
            logits = torch.where(seen, penalized, logits)
        if params.temperature <= 0:
            return logits.argmax(dim=-1).tolist()
        logits = logits / params.temperature
        if params.top_p < 1.0:
            sorted_logits, sorted_index = torch.sort(logits, descending=False, dim=-1)
            cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            remove = cumulative <= (1 - params.top_p)
            remove[..., -1:] = False
            logits = logits.masked_fill(remove.scatter(1, sorted_index, remove), -math.inf)
        probs = logits.softmax(dim=-1)
        return [int(torch.multinomial(probs[row], 1, generator=gen).item()) for row, gen in enumerate(generators)]
