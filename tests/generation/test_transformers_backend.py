"""The local transformers backend against plain ``model.generate`` one prompt at a time (the reference)."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from chimed_trl.generation import SamplingParams, SeededSampler, TransformersGenerator

from .conftest import PROMPTS

NEW = 10


def messages(prompt):
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def plain_greedy(model, tokenizer, prompt, max_new_tokens=NEW):
    """Reference: one unpadded prompt through transformers' own chat-template tokenization and greedy generate."""
    enc = tokenizer.apply_chat_template(
        messages(prompt), add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_batched_sorted_greedy_equals_one_prompt_at_a_time(diverse_model, tokenizer):
    # bugs caught: outputs left in length-sorted order (not input order), right padding or a missing
    # attention mask (changes the continuation of the shorter prompts), prompt tokens left in the output
    gen = TransformersGenerator(diverse_model, tokenizer, max_new_tokens=NEW, batch_size=3, show_progress=False)
    expected = [plain_greedy(diverse_model, tokenizer, p) for p in PROMPTS]
    assert len(set(expected)) == len(PROMPTS)  # the check means something: every prompt answers differently
    diverse_model.train()
    assert gen(PROMPTS) == expected
    assert diverse_model.training  # the caller's mode is restored (generation itself ran in eval mode)
    diverse_model.eval()
    assert gen.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=NEW)) == [[e, e] for e in expected]


def test_seeded_samples_do_not_depend_on_batching_order_or_neighbours(diverse_model, tokenizer):
    # bugs caught: samples grouped into the wrong prompt (k*n slicing), one RNG stream per batch (samples
    # then change with batch size or with which prompts share the batch), n not honoured
    sampling = SamplingParams(n=3, temperature=1.0, max_new_tokens=NEW, seed=7)
    gen = TransformersGenerator(diverse_model, tokenizer, batch_size=4, show_progress=False)
    batched = gen.generate(PROMPTS, sampling)
    assert [len(s) for s in batched] == [3] * len(PROMPTS)
    alone = [
        TransformersGenerator(diverse_model, tokenizer, batch_size=1, show_progress=False).generate([p], sampling)[0]
        for p in PROMPTS
    ]
    assert batched == alone
    assert gen.generate(PROMPTS[::-1], sampling)[::-1] == batched
    assert all(len(set(s)) > 1 for s in batched)  # sampling, not greedy
    other_seed = gen.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, max_new_tokens=NEW, seed=8))
    assert other_seed != batched


def test_tiny_top_p_and_tiny_temperature_reduce_sampling_to_greedy(diverse_model, tokenizer):
    # bug caught: temperature / top_p not applied before the sampler (it would sample the raw distribution)
    gen = TransformersGenerator(diverse_model, tokenizer, batch_size=4, show_progress=False)
    expected = [[plain_greedy(diverse_model, tokenizer, p)] * 2 for p in PROMPTS[:3]]
    assert (
        gen.generate(PROMPTS[:3], SamplingParams(n=2, temperature=1.0, top_p=1e-6, max_new_tokens=NEW, seed=1))
        == expected
    )
    assert gen.generate(PROMPTS[:3], SamplingParams(n=2, temperature=1e-4, max_new_tokens=NEW, seed=1)) == expected
    # top_k=1 keeps only the most likely token: greedy again (bug caught: top_k ignored by the backend)
    top1 = SamplingParams(n=2, temperature=1.0, top_k=1, max_new_tokens=NEW, seed=1)
    assert gen.generate(PROMPTS[:3], top1) == expected


def test_seeded_sampler_draws_from_the_softmax():
    # bug caught: a biased draw (uniform noise instead of Gumbel, a wrong sign, rows sharing one noise stream)
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, float("-inf")])
    rows = 40_000
    sampler = SeededSampler(range(rows))
    chosen = sampler(torch.zeros(rows, 3, dtype=torch.long), logits.repeat(rows, 1)).argmax(-1)
    freq = torch.bincount(chosen, minlength=5).float() / rows
    assert torch.allclose(freq, torch.softmax(logits, -1), atol=0.01)  # 3 sigma is ~0.007 at 40k rows


def test_seeded_sampler_on_top_k_candidates_draws_what_the_whole_vocabulary_draws():
    """After top-k only k tokens are finite and only their noise is computed (the speed-up); the draw must be
    the documented one: argmax over the finite tokens of logit + Gumbel(u), u the row's noise for every token
    id (``uniform`` over the whole vocabulary), and follow the softmax.

    Bugs caught: noise taken by candidate position instead of token id (samples change with top-k order),
    the chosen candidate index returned instead of its token id, rows sharing the candidates' noise.
    """
    rows, vocab, finite = 20_000, 400, [7, 50, 123, 399]
    logits = torch.full((vocab,), float("-inf"))
    logits[finite] = torch.tensor([2.0, 1.0, 0.0, -1.0])
    sampler = SeededSampler(range(rows))
    drawn = sampler(torch.zeros(rows, 3, dtype=torch.long), logits.repeat(rows, 1)).argmax(-1)
    noise = -torch.log(-torch.log(sampler.uniform(0, vocab, "cpu")[:, finite]))
    expected = torch.tensor(finite)[(logits[finite] + noise).argmax(-1)]
    assert torch.equal(drawn, expected)
    freq = torch.bincount(drawn, minlength=vocab).float()[finite] / rows
    assert torch.allclose(freq, torch.softmax(logits[finite], -1), atol=0.015)


def test_seeded_sampler_taking_the_top_k_itself_draws_what_it_draws_after_the_top_k_warper():
    """The local backend lets the sampler take the top k itself (no top-p): the same draws as the documented
    TopKLogitsWarper -> SeededSampler chain (random logits: no ties at the k-th value).

    Bugs caught: the k largest taken from the wrong end, k ignored (a draw over the whole vocabulary).
    """
    from transformers import TopKLogitsWarper

    logits = torch.randn(500, 300, generator=torch.Generator().manual_seed(0))
    ids = torch.zeros(500, 2, dtype=torch.long)
    for k in (1, 5, 120):  # 120 of 300: above a quarter of the vocabulary
        fused = SeededSampler(range(500), top_k=k)(ids, logits).argmax(-1)
        chained = SeededSampler(range(500))(ids, TopKLogitsWarper(k)(ids, logits.clone())).argmax(-1)
        assert torch.equal(fused, chained)
        assert (logits.gather(1, fused[:, None]) >= logits.topk(k).values[:, -1:]).all()


def test_seeded_sampler_never_draws_a_filtered_token():
    """Row key 264107 at step 0 has uniform noise 1.0 for token 22 (found by search): Gumbel noise +inf.

    Bug caught: on the whole-vocabulary path -inf + inf is NaN and argmax picks the NaN, i.e. a token that
    top-k / top-p had ruled out.
    """
    logits = torch.zeros(1, 64)
    logits[0, 40:] = float("-inf")  # 40 of 64 finite: the whole-vocabulary path
    logits[0, 22] = float("-inf")
    sampler = SeededSampler([264107])
    assert sampler.uniform(0, 64, "cpu")[0, 22] == 1.0  # the case exists (the premise of this test)
    choice = sampler(torch.zeros(1, 3, dtype=torch.long), logits).argmax(-1).item()
    assert logits[0, choice].isfinite()


def oom_model_class(base_class):
    """A real model whose generate raises CUDA's out-of-memory error above a batch size.

    There is no GPU here, so the error is injected at the model's own ``generate`` (a subclass of the real
    class, the real weights and generate below the limit): the halving and retry run exactly as on CUDA.
    """

    class OOMModel(base_class):
        limit = 2
        calls: list[int] = []

        def generate(self, input_ids=None, **kwargs):
            type(self).calls.append(input_ids.shape[0])
            if input_ids.shape[0] > self.limit:
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")
            return super().generate(input_ids=input_ids, **kwargs)

    return OOMModel


def test_out_of_memory_halves_the_batch_and_keeps_every_prompt(diverse_model, diverse_model_dir, tokenizer):
    # bugs caught: the failed batch dropped instead of retried, no halving (endless retry), halving not kept
    OOMModel = oom_model_class(type(diverse_model))
    model = OOMModel.from_pretrained(diverse_model_dir).eval()
    sampling = SamplingParams(n=2, temperature=1.0, max_new_tokens=NEW, seed=3)
    gen = TransformersGenerator(model, tokenizer, batch_size=8, show_progress=False)
    got = gen.generate(PROMPTS, sampling)
    # 7 prompts: 7 fails, 4 fails, then batches of 2: 2, 2, 2, 1 (the halved size is kept)
    assert OOMModel.calls == [7, 4, 2, 2, 2, 1]
    reference = TransformersGenerator(diverse_model, tokenizer, batch_size=8, show_progress=False)
    assert got == reference.generate(PROMPTS, sampling)

    OOMModel.limit, OOMModel.calls = 0, []
    with pytest.raises(torch.OutOfMemoryError):
        gen.generate(PROMPTS, sampling)
    assert OOMModel.calls == [7, 4, 2, 1]  # gives up at batch size 1, no endless loop


def test_bos_is_not_doubled(tokenizer):
    # bug caught: add_special_tokens=True on a rendering whose template already put BOS (two BOS tokens)
    from tokenizers.processors import TemplateProcessing

    tok = copy.deepcopy(tokenizer)
    tok.bos_token = "<|endoftext|>"
    bos = tok.bos_token_id
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)]
    )
    assert tok("发烧").input_ids[:2] != [bos, bos] and tok("发烧").input_ids[0] == bos  # the tokenizer adds BOS
    tok.chat_template = "{{ bos_token }}" + tok.chat_template
    templated = TransformersGenerator(None, tok).encode(TransformersGenerator(None, tok).render("发烧"))
    assert templated[0] == bos and templated[1] != bos
    assert templated == tok.apply_chat_template(
        [{"role": "user", "content": "发烧"}], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    plain = TransformersGenerator(None, tok, use_chat_template=False)
    assert [i == bos for i in plain.encode("发烧")[:2]] == [True, False]  # BOS added once
    assert [i == bos for i in plain.encode("<|endoftext|>发烧")[:2]] == [True, False]  # already there: not again


def test_generation_uses_the_peft_adapter(diverse_model_dir, tokenizer):
    # bug caught: generating with the base model under the adapter (unwrapping, adapters disabled)
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(diverse_model_dir).eval()
    base_answers = [plain_greedy(base, tokenizer, p) for p in PROMPTS[:3]]
    lora = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, lora).eval()
    merged = copy.deepcopy(peft_model).merge_and_unload().eval()  # reference: the adapter folded into the weights
    expected = [plain_greedy(merged, tokenizer, p) for p in PROMPTS[:3]]
    assert expected != base_answers
    assert (
        TransformersGenerator(peft_model, tokenizer, max_new_tokens=NEW, show_progress=False)(PROMPTS[:3]) == expected
    )


def test_seeded_sampler_row_draws_do_not_depend_on_chunking_or_neighbours():
    # bug caught: keys misaligned with rows when the vocabulary is processed in row chunks
    scores = torch.randn(10, 300, generator=torch.Generator().manual_seed(0))
    chunked = SeededSampler(range(100, 110))
    chunked.chunk_elements = 900  # 3 rows per chunk
    together = chunked(torch.zeros(10, 4, dtype=torch.long), scores).argmax(-1)
    alone = [
        SeededSampler([100 + r])(torch.zeros(1, 4, dtype=torch.long), scores[r : r + 1]).argmax(-1) for r in range(10)
    ]
    assert together.tolist() == torch.cat(alone).tolist()
    assert len(set(together.tolist())) > 1


def test_per_prompt_seeds_give_the_samples_of_one_call_per_prompt(tiny_model_dir, tokenizer):
    # The rejection-sampling contract, on the real tiny model: with one seed per prompt, a batched call gives
    # string-identical samples to the old loop (one call per prompt, its seed in SamplingParams), whatever the
    # batch size. Bugs caught: per-prompt seeds ignored (one stream for the batch), keyed by position in the
    # batch or by the repeated-text count of the batch, rows dealt to the wrong prompt after length sorting.
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = PROMPTS + [PROMPTS[0]]  # a repeated text: with per-prompt seeds it is keyed like any other prompt
    seeds = [101, 7, 99, 3, 55, 12, 8, 42]
    loop = []
    for prompt, seed in zip(prompts, seeds):  # the old per-prompt path, one generate per prompt
        sampling = SamplingParams(n=3, temperature=1.0, max_new_tokens=NEW, seed=seed, top_k=50)
        loop.append(
            TransformersGenerator(model, tokenizer, batch_size=1, show_progress=False).generate([prompt], sampling)[0]
        )
    sampling = SamplingParams(n=3, temperature=1.0, max_new_tokens=NEW, top_k=50)
    one = TransformersGenerator(model, tokenizer, batch_size=1, show_progress=False).generate(prompts, sampling, seeds)
    eight = TransformersGenerator(model, tokenizer, batch_size=8, show_progress=False).generate(
        prompts, sampling, seeds
    )
    assert one == eight == loop
    assert len({s for row in loop for s in row}) > 12  # really sampled, distinct across prompts


def test_truncated_flags_match_plain_generate(diverse_model, tokenizer):
    # Truncated = no EOS within max_new_tokens. Reference: plain greedy generate per prompt with the same EOS.
    # To get both kinds, the EOS is a token the greedy answers of some prompts contain and others do not.
    # Bugs caught: flags always False, inverted, or attached to the wrong row after length sorting and padding.
    model = copy.deepcopy(diverse_model)
    answers = []
    for prompt in PROMPTS:
        enc = tokenizer.apply_chat_template(
            messages(prompt), add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        out = model.generate(**enc, max_new_tokens=NEW, do_sample=False, eos_token_id=None)
        answers.append(out[0, enc["input_ids"].shape[1] :].tolist())
    counts = {t: sum(t in a for a in answers) for a in answers for t in a}
    eos = next(t for t, c in sorted(counts.items()) if 0 < c < len(PROMPTS) - 1)
    model.generation_config.eos_token_id = [eos]
    expected = [eos not in a for a in answers]  # greedy: the same tokens up to the first EOS
    assert 0 < sum(expected) < len(PROMPTS)
    gen = TransformersGenerator(model, tokenizer, max_new_tokens=NEW, batch_size=3, show_progress=False)
    got = gen.generate_completions(PROMPTS, SamplingParams(n=2, max_new_tokens=NEW))
    assert [row[0].truncated for row in got] == expected
    assert all(row[0] == row[1] for row in got)
