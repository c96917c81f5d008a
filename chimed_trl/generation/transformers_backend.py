"""Local generation with a transformers (or PEFT-wrapped) model.

- Batched and left-padded, with the KV cache; ``n`` samples per prompt through ``num_return_sequences``
  in the ``GenerationConfig``, so each prompt is encoded (prefilled) once per batch, not ``n`` times.
- Prompts are sorted by token length (longest first, so an out-of-memory shows on the first batch)
  and the outputs are returned in input order.
- Under ``accelerate launch`` the sorted prompts are dealt round-robin to the processes (balanced
  lengths), each generates its shard, and ``accelerate.utils.gather_object`` brings every
  ``(index, samples)`` back to every process, which puts them in input order. Each process gets the
  same number of prompts (padded with repeats), so ZeRO-3/FSDP ranks call ``generate`` equally often.
- On CUDA out-of-memory the batch is halved and retried (and stays halved for the rest of the call);
  at batch size 1 the error is raised.
- Seeded sampling is batch-independent: each (prompt, sample) row gets its own counter-based random
  stream (:class:`SeededSampler`), so a seed gives the same samples whatever the batch size,
  sorting or number of processes (up to float round-off between batch shapes, which can in rare
  near-ties flip a token). Without a seed, one is drawn from torch's global generator, so
  ``transformers.set_seed`` still makes a run repeatable.
- Tokenization matches training: a chat-template rendering is tokenized with
  ``add_special_tokens=False`` (the template owns BOS, exactly as ``apply_chat_template(tokenize=True)``
  does), plain text gets the tokenizer's special tokens unless it already starts with BOS.

There is no in-process vLLM engine: none can be tested here (no GPU). At scale, launch ``vllm serve``
(:mod:`chimed_trl.generation.server`) and generate through :class:`~chimed_trl.generation.OpenAIGenerator`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from chimed_trl.generation.base import Completion, Prompt, SamplingParams, as_messages, sample_key, stream_keys

logger = logging.getLogger(__name__)


def _signed(constant: int) -> int:
    return constant - (1 << 64) if constant >= 1 << 63 else constant


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    # logical shift on int64 (torch's >> is arithmetic: it would copy the sign bit)
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer: a bijective 64-bit hash (int64 products wrap, which is what it needs)."""
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    return x ^ _shift_right(x, 31)


class SeededSampler(LogitsProcessor):
    """Sample one token per row with the Gumbel-max trick and return it as a one-hot (0 / -inf) row.

    Row ``r`` at decoding step ``t`` uses uniform noise ``hash(row_key[r], t, token id)``: a stream
    that depends on nothing else in the batch, which ``torch.multinomial`` over a shared generator
    cannot give. ``argmax(logits + Gumbel)`` is an exact draw from ``softmax(logits)``; put it after
    the temperature / top-p warpers, and ``generate(do_sample=True)`` then picks the one token left.
    ``top_k``: draw among the k most likely tokens itself (what ``TopKLogitsWarper`` would leave, one pass
    fewer over the vocabulary; usable when no top-p follows the top-k).
    """

    def __init__(self, row_keys: Sequence[int], top_k: int = 0):
        self.row_keys = torch.tensor(list(row_keys), dtype=torch.int64)
        self.start: int | None = None
        self.top_k = top_k

    def uniform(self, step: int, vocab_size: int, device, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Noise of each row for every token id (or, per row, for the ids in ``tokens``: the same values)."""
        row = _mix64(self.row_keys.to(device) * _GOLDEN + _mix64(torch.tensor(step + 1, device=device)))
        if tokens is None:
            tokens = torch.arange(vocab_size, device=device, dtype=torch.int64)[None, :]
        bits = _shift_right(_mix64(row[:, None] ^ (tokens * _GOLDEN)), 40)  # top 24 bits
        return (bits.float() + 0.5) / float(1 << 24)  # in (0, 1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start is None:  # steps count from the first new token, whatever the padded prompt length
            self.start = input_ids.shape[1]
        step, logits = input_ids.shape[1] - self.start, scores.float()
        # after top-k / top-p only the candidates are finite; -inf + noise is never the argmax, so the noise
        # of the candidates alone gives the same draw, at k hashes per row instead of the vocabulary's.
        # A uniform that rounds to 1.0 gives +inf noise: -inf + inf is NaN, which argmax would pick: masked.
        if self.top_k:
            tokens = logits.topk(min(self.top_k, logits.shape[-1]), dim=-1).indices
        else:
            candidates = int(torch.isfinite(logits).sum(dim=-1).max())
            tokens = logits.topk(candidates, dim=-1).indices if candidates * 4 <= logits.shape[-1] else None
        if tokens is not None:
            gumbel = -torch.log(-torch.log(self.uniform(step, 0, logits.device, tokens)))
            values = logits.gather(1, tokens)
            drawn = torch.where(values.isfinite(), values + gumbel, -torch.inf).argmax(dim=-1, keepdim=True)
            choice = tokens.gather(1, drawn)
        else:
            gumbel = -torch.log(-torch.log(self.uniform(step, logits.shape[-1], logits.device)))
            choice = torch.where(logits.isfinite(), logits + gumbel, -torch.inf).argmax(dim=-1, keepdim=True)
        return torch.full_like(scores, float("-inf")).scatter_(1, choice, 0.0)


class TransformersGenerator:
    """``generate(prompts, SamplingParams(n=8, temperature=0.8, seed=0))`` with a local model.

    ``batch_size`` counts prompts (a batch holds ``batch_size * n`` sequences). ``shard=True`` splits the
    prompts across accelerate processes; every process must then call ``generate`` with the same prompts.

    Example::

        from transformers import AutoModelForCausalLM, AutoTokenizer
        from chimed_trl import build_tiny
        from chimed_trl.generation import SamplingParams, TransformersGenerator

        path = build_tiny("/tmp/chimed-tiny")
        gen = TransformersGenerator(AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path))
        gen.generate(["头痛怎么办？"], SamplingParams(n=4, temperature=1.0, seed=0))  # [[four answers]]
    """

    def __init__(
        self,
        model,
        tokenizer,
        max_new_tokens: int = 128,
        batch_size: int = 8,
        use_chat_template: bool = True,
        *,
        shard: bool = True,
        show_progress: bool = True,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.use_chat_template = use_chat_template and tokenizer.chat_template is not None
        self.shard, self.show_progress = shard, show_progress

    def render(self, prompt: Prompt) -> str:
        if not self.use_chat_template:
            return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
        return self.tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)

    def encode(self, text: str) -> list[int]:
        bos = self.tokenizer.bos_token
        add_special = not self.use_chat_template and not (bos and text.startswith(bos))
        return self.tokenizer(text, add_special_tokens=add_special).input_ids

    def __call__(self, prompts: Sequence[Prompt]) -> list[str]:
        """Greedy, one completion per prompt (what evaluation uses)."""
        sampling = SamplingParams(n=1, max_new_tokens=self.max_new_tokens)
        return [c[0] for c in self.generate(prompts, sampling)]

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingParams, seeds=None) -> list[list[str]]:
        """``sampling.n`` answers per prompt, in input order; ``seeds``: one per prompt (see :func:`stream_keys`)."""
        return [[c.text for c in row] for row in self.generate_completions(prompts, sampling, seeds)]

    @torch.no_grad()
    def generate_completions(
        self, prompts: Sequence[Prompt], sampling: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[Completion]]:
        """Like :meth:`generate`, each answer with its ``truncated`` flag (no EOS within ``max_new_tokens``)."""
        if not prompts:
            return []
        texts = [self.render(p) for p in prompts]
        encoded = [self.encode(t) for t in texts]
        seed = sampling.seed
        if seed is None and seeds is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        keys = stream_keys(texts, seed, seeds)
        order = sorted(range(len(texts)), key=lambda i: -len(encoded[i]))
        state = self._state()
        shard = self._my_shard(order, state)
        was_training = self.model.training
        self.model.eval()  # no dropout while sampling, even when called mid-training
        try:
            results = self._generate_shard(shard, encoded, keys, sampling, state)
        finally:
            self.model.train(was_training)
        if state is not None and state.num_processes > 1:
            from accelerate.utils import gather_object

            results = dict(gather_object(list(results.items())))
        return [results[i] for i in range(len(texts))]

    def _state(self):
        if not self.shard:
            return None
        from accelerate import PartialState

        # cpu=True matters: under a MULTI_GPU config with no GPU (our CPU tests), a PartialState built
        # without it reports no distribution and gather_object returns only the local items.
        return PartialState(cpu=self.model.device.type == "cpu")

    @staticmethod
    def _my_shard(order: list[int], state) -> list[int]:
        if state is None or state.num_processes == 1:
            return order
        world = state.num_processes
        shard = order[state.process_index :: world]  # round-robin over the length order: balanced work
        per_process = -(-len(order) // world)
        return shard + [shard[-1] if shard else order[-1]] * (per_process - len(shard))

    def _generate_shard(self, shard, encoded, keys, sampling, state) -> dict[int, list[Completion]]:
        results: dict[int, list[Completion]] = {}
        batch_size, start = self.batch_size, 0
        quiet = not self.show_progress or (state is not None and not state.is_local_main_process)
        with tqdm(total=len(shard), desc="generating", unit="prompt", disable=quiet) as bar:
            while start < len(shard):
                batch = shard[start : start + batch_size]
                try:
                    samples = self._generate_batch(batch, encoded, keys, sampling)
                except torch.OutOfMemoryError:
                    if batch_size == 1:
                        raise
                    batch_size //= 2
                    logger.warning("CUDA out of memory: generation batch halved to %d prompts", batch_size)
                    samples = None
                if samples is None:  # outside the except block, so the failed batch's tensors are freed
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    continue
                results.update(zip(batch, samples))
                start += len(batch)
                bar.update(len(batch))
        return results

    def generation_config(self, sampling: SamplingParams):
        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens, config.use_cache, config.num_beams = sampling.max_new_tokens, True, 1
        if config.pad_token_id is None:
            config.pad_token_id = self.tokenizer.pad_token_id
            if config.pad_token_id is None:
                config.pad_token_id = self.tokenizer.eos_token_id
        # temperature and top-p run in our processor list (before SeededSampler), so the built-in
        # warpers are neutral here: temperature 1, top_p 1, no top_k
        config.temperature, config.top_p = 1.0, 1.0
        config.do_sample, config.top_k = not sampling.greedy, (0 if not sampling.greedy else 50)
        config.num_return_sequences = 1 if sampling.greedy else sampling.n
        return config

    def _generate_batch(self, batch, encoded, keys, sampling) -> list[list[Completion]]:
        config = self.generation_config(sampling)
        input_ids, attention_mask = self._left_pad([encoded[i] for i in batch], config.pad_token_id)
        processors = LogitsProcessorList()
        if not sampling.greedy:
            if sampling.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(sampling.temperature))
            fused = sampling.top_k if sampling.top_p >= 1.0 else 0  # the sampler takes the top k itself
            if sampling.top_k > 0 and not fused:
                processors.append(TopKLogitsWarper(sampling.top_k))
            if sampling.top_p < 1.0:
                processors.append(TopPLogitsWarper(sampling.top_p))
            row_keys = [sample_key(*keys[i], j) for i in batch for j in range(sampling.n)]
            processors.append(SeededSampler(row_keys, top_k=fused))
        output = self.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=config, logits_processor=processors
        )
        new_tokens = output[:, input_ids.shape[1] :]
        decoded = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        truncated = self._no_eos(new_tokens, config).tolist()
        rows = [Completion(text.strip(), cut) for text, cut in zip(decoded, truncated)]
        if sampling.greedy:  # one greedy answer per prompt; n greedy answers are all the same
            return [[row] * sampling.n for row in rows]
        return [rows[k * sampling.n : (k + 1) * sampling.n] for k in range(len(batch))]

    def _no_eos(self, new_tokens: torch.Tensor, config) -> torch.Tensor:
        """Per row: no end-of-sequence token among the new tokens, i.e. the answer was cut at max_new_tokens.

        A finished row is padded after its EOS, so "no EOS anywhere" is exactly "ran to the limit".
        """
        eos = config.eos_token_id if config.eos_token_id is not None else self.tokenizer.eos_token_id
        eos_ids = torch.tensor(eos if isinstance(eos, list) else [eos], device=new_tokens.device)
        return ~torch.isin(new_tokens, eos_ids).any(dim=1)

    def _left_pad(self, rows: list[list[int]], pad_id: int):
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, row in enumerate(rows):
            if row:
                input_ids[k, width - len(row) :] = torch.tensor(row)
                attention_mask[k, width - len(row) :] = 1
        return input_ids.to(self.model.device), attention_mask.to(self.model.device)
