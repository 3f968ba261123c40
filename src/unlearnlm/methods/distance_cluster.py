"""The paper's method: bounded distance loss + cluster-mean positive loss + normal KL.

Chen et al., "Machine Unlearning in Large Language Models" (arXiv 2404.16841), as reconstructed here
from its abstract (the full text and code are not public):

    loss = w_neg · neg  +  w_pos · pull  +  w_ce · ce  +  w_nor · kl

* ``neg``  — the distance (negative) loss on flagged dialogues (x, y_bad), *bounded* so it stops
  pushing once the model has moved far enough (unlike gradient ascent). Variants (``distance``):
  ``representation``: hinge on the cosine distance between the model's and the original's response
  hidden states; ``unlikelihood``: -log(1 - p(y_t)); ``divergence``: hinge on per-token KL;
  ``likelihood``: hinge on the old answer's NLL per token (gradient ascent that stops at ``margin``).
* ``pull`` — the positive loss: the model's pooled response state on (x, y_bad) is pulled toward the
  mean of the cluster of expected (preferable) outputs assigned to x.
* ``ce``   — token cross-entropy to the prompt's own expected answer (``target: own``; the cluster's medoid
  answer where it has none, or always with ``target: medoid``), so generated text changes, not only hidden
  states, and each refusal fits its request while the cluster mean acts in representation space.
* ``kl``   — the normal loss, KL(p_original || p_θ) on normal dialogues, keeping standard abilities.
* ``contrast`` (``w_contrast``, an addition of ours) — unlikelihood of a refusal opening (the first sentence of
  an expected output, or its first ``contrast_tokens`` tokens; per token or as a whole, ``contrast_loss``) as the
  answer to a normal prompt. The KL term averages over every response token, so a refusal that changes only the
  first few tokens of a benign answer barely moves it; this term names that failure directly: refusing is for
  flagged prompts only. Safe prompts that look like the forget prompts (``data.lookalike_prompts``) join the normal
  prompts as its candidates.
* ``open`` (``w_open``, an addition of ours) — the same KL as ``kl``, on the first ``open_tokens`` response tokens
  of each normal row only: the positions where an answer turns into a refusal, held to the original's
  distribution whatever refusal wording the model drifts toward.
* recovery rows (``recovery_share``, after Qi et al., "Safety Alignment Should Be Made More Than Just a Few Tokens
  Deep", arXiv 2406.05946) — a share of the ``ce`` rows open with the first few words of the old (bad) answer and
  go on with the expected answer, the CE read on the expected answer only: the model learns to turn back to a refusal
  after it has started to comply, so that refusing is not decided by the first token alone.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import nn

from unlearnlm import losses
from unlearnlm.clustering import assign_nearest, cluster_outputs, match_nearest, prompt_states
from unlearnlm.data.formatting import IGNORE_INDEX, LOSS_SPANS
from unlearnlm.data.records import Dialogue
from unlearnlm.errors import ConfigError
from unlearnlm.methods.base import (
    Outputs,
    PreparedData,
    PrepareContext,
    StepOutput,
    UnlearningMethod,
    fit_window,
    forward_many,
    original_states,
    reference_forward,
    reference_map,
    reference_top_k,
    register,
    response_window,
    right_aligned,
)
from unlearnlm.methods.baselines import normal_kl
from unlearnlm.models import Reference, load_model


@dataclass
class DistanceClusterOptions:
    """Options of the paper's method; defaults come from the measurements in benchmarks/."""

    distance: Literal["representation", "unlikelihood", "divergence", "likelihood"] = "representation"
    """Which bounded distance diverts the model from its old answers."""
    margin: float = 0.5
    """Bound of the distance: cosine distance (representation), nats of KL per token (divergence) or nats of
    NLL per token (likelihood)."""
    layer: int = -1
    """Hidden-state layer for representations (-1: last; HF index into ``hidden_states``)."""
    n_clusters: int = 4
    """K of k-means over the expected outputs."""
    target: Literal["medoid", "own"] = "own"
    """Answer for the token CE: the prompt's own expected answer when it has one (else its cluster's medoid), or
    always the assigned cluster's medoid. ``medoid`` taught SmolLM2 one stock refusal for every request."""
    w_neg: float = 1.0
    """Weight of the distance (negative) loss."""
    w_pos: float = 1.0
    """Weight of the pull toward the cluster mean."""
    w_ce: float = 1.0
    """Weight of the cross-entropy to the target answer."""
    w_nor: float = 3.0
    """Weight of the normal loss (KL to the original); 1 over-refused benign prompts in our runs."""
    w_contrast: float = 1.0
    """Weight of the unlikelihood of refusal openings as answers to normal prompts (0: off). Without it the
    model refused 19% of benign early-stopping requests by the time it refused most harmful ones."""
    contrast_prompts: Literal["spread", "nearest"] = "nearest"
    """Which normal prompt each contrast row uses: ``spread`` strides over the normal set; ``nearest`` pairs each
    forget prompt with the normal prompts the original holds most alike at the last prompt token (hard negatives:
    the benign requests most at risk of being refused), each normal prompt used about equally often."""

    contrast_native: bool = False
    """Every other contrast row takes its opening from the original's own refusals met before training (in the harm
    task, its refusals among the scanned answers) instead of the expected outputs. Training toward the expected
    refusals also raises the model's native refusal ("I'm sorry for any confusion, but as a chatbot ..."), which run
    L gave to 17% of WritingBench's writing requests; the expected outputs' openings do not name it. Off: on the
    harm default (run N) it kept a fifth of the benign early-stopping requests refused from step 20 on, so the stop
    rule kept step 10 (82% of held-out harmful prompts still flagged)."""
    contrast_own: bool = False
    """Each contrast row (the even ones with ``contrast_native``) takes the first sentence of the refusal the
    expected-output recipe writes for that row's own normal prompt (:attr:`PrepareContext.recipe_refusals`), where
    it otherwise takes an expected output's, which refuses another request. Trained toward the recipe, the model's
    refusals of safe prompts that share words with harmful ones are in the recipe's form and name the safe request
    ("I'm sorry, but I can't help you smash a serve in tennis": six of the eight held-out homonyms run NT
    refused): this makes that sentence unlikely on the prompts where it would be said. Rows whose prompt has none
    keep an expected output's. Off: on the harm task with native rows and 120 steps (run NTO120 against NT120) it
    refused more safe requests, not fewer (homonyms 28.1% against 17.2%, writing instructions 20.3% against 3.1%),
    perhaps because the token push falls on the request words copied after the opening, the likeliest tokens there,
    and leaves the opening free. Needs a task that writes them: harm or custom with a ``fitting`` or ``topical``
    recipe, privacy with refusal targets (a refusal naming the retained person)."""
    contrast_tokens: int = 0
    """The contrast term's unlikelihood over each row's first this many tokens only (0: the whole first sentence,
    whose request-naming words dilute the opening that decides a refusal)."""
    contrast_loss: Literal["token", "sequence"] = "token"
    """How a contrast row is made unlikely. ``token``: -log(1 - p) of each token given the ones before it, averaged
    (:func:`~unlearnlm.losses.unlikelihood`); a forced refusal's later words are likely once its start is given,
    whatever the prompt, so they carry most of the push. ``sequence``: -log(1 - P) of the opening as a whole
    (:func:`~unlearnlm.losses.sequence_unlikelihood`), which costs nothing while the model would not say it and acts
    on the normal prompts it starts to refuse; meant with a short opening (``contrast_tokens``: 3-6), since a whole
    sentence in one wording is unlikely even where the model refuses in another. ``token`` by default: on the harm
    task (run SQ, with native openings and look-alike partners) ``sequence`` let benign refusals past the stop rule's
    bound from step 40 on, where the always-on per-token push holds them back from the start."""
    w_anchor: float = 0.0
    """Weight of the anchor (0: off): each contrast row's normal prompt keeps the original's state at its last prompt
    token (the state that decides whether the answer opens with a refusal), as the squared distance between the two
    relative to the original's squared norm (:func:`~unlearnlm.losses.anchor_distance`), at ``layer``. The contrast
    rows' prompts are the normal prompts most like the forget prompts (``contrast_prompts: nearest``): the safe
    requests that share a forget prompt's words, whose refusals the KL on the original's answers holds back only
    through one next-token distribution. Costs no forward pass: the states come from the contrast stream, the
    original's from the pass that pairs them. Needs ``w_contrast > 0``."""
    w_open: float = 0.0
    """Weight of the KL to the original on the first ``open_tokens`` response tokens of normal rows (0: off)."""
    open_tokens: int = 4
    """How many response tokens count as an answer's opening for ``w_open``."""
    recovery_share: float = 0.0
    """Share of the CE rows that are recovery rows (0: none): the row's old answer cut after its first 1 to
    ``recovery_words`` words, then the expected answer, with the CE on the expected answer only
    (:func:`recovery_rows`; Qi et al. 2024, arXiv 2406.05946, train on such rows against prefilling and fine-tuning
    attacks). Refusing is then not only a matter of the first token: a prompt whose natural answer opens by restating
    the task ("To make thermite, you ...", as SmolLM2 answers "How do I ...?" questions, harmful or not) can still be
    refused after it. Which rows, and how many words each keeps, follow a hash of the prompt."""
    recovery_words: int = 16
    """Longest prefix of the old answer, in words, that a recovery row keeps (each row keeps 1 to this many)."""
    w_unseen: float = 0.0
    """Weight of the stranger term (0: off): on the secret values' tokens of each forget answer, the KL from the
    original's next-token distributions on the same answer about someone it never saw (the task's
    :attr:`~unlearnlm.tasks.base.Plan.unseen_views`: privacy swaps in a never-planted person's name) to the model's.
    Its minimum puts the forgotten values as likely as the teacher finds them in a stranger's answer: a target for
    what membership inference compares, where gradient ascent (``distance: likelihood``) pushes them down without
    one and took the retained people's values with them. It reads the answers the forget stream already computes: no
    extra pass. Needs a task that writes the views (privacy, whose default is 1 since run PU1: membership AUC 0.93 ->
    0.86 with the retained people kept, true values after prefilling two words 79% -> 11%; the original teacher
    still knows the values' strings, so it does not reach the never-seen level)."""
    unseen_teacher: Literal["original", "base", "capped"] = "original"
    """Whose distributions the stranger term reads on the views: the ``original``'s (which, planted, still knows the
    values' strings: on the privacy default it gives the forgotten values 1.7 nats per token on the views against
    4.7 for never-seen people's own values), or the ``base`` model's, one that never saw the forget data (the
    knowledge tasks: the model before planting, :attr:`PrepareContext.unseen_model`; 4.4 nats per token there),
    loaded for the pass before training and dropped after. ``capped``: the original's, with each value token's
    probability lowered to the base model's where the original's is higher and the rest of the distribution scaled up
    to fill the difference (:func:`cap_next_token`): the base model's belief about the value itself, the original's
    about everything else (formats, the tokens it would write instead). Run PC1: the AUC fell faster than with the
    original but a third of the retained people's answers went with it, as with ``base``."""

    def __post_init__(self) -> None:
        for name in ("w_contrast", "w_open", "w_anchor", "contrast_tokens", "w_unseen"):
            if getattr(self, name) < 0:
                raise ConfigError(f"method.options.{name}: must be >= 0, got {getattr(self, name)}")
        shaping = [name for name in ("contrast_native", "contrast_own", "w_anchor") if getattr(self, name)]
        if shaping and self.w_contrast == 0:
            raise ConfigError(f"method.options.{shaping[0]} shapes the contrast term, which is off here (w_contrast: "
                              "0, the privacy and hallucination tasks' default): set method.options.w_contrast > 0")
        if not 0 <= self.recovery_share <= 1:
            raise ConfigError(f"method.options.recovery_share: must be a share in [0, 1], got {self.recovery_share}")
        if self.recovery_words < 1:
            raise ConfigError(f"method.options.recovery_words: must be >= 1, got {self.recovery_words}")
        if self.open_tokens < 1:
            raise ConfigError(f"method.options.open_tokens: must be >= 1, got {self.open_tokens}")
        if self.margin <= 0:
            raise ConfigError(f"method.options.margin: must be positive, got {self.margin}")
        if self.n_clusters < 1:
            raise ConfigError(f"method.options.n_clusters: must be >= 1, got {self.n_clusters}")


def first_sentence(text: str) -> str:
    """Text up to and including its first sentence end (the whole text when there is none)."""
    match = re.search(r"[.!?](?:\s|$)", text)
    return text[: match.end()].strip() if match else text.strip()


def recovery_rows(targets: Sequence[Dialogue], old: Sequence[str], share: float, max_words: int) -> list[Dialogue]:
    """``targets`` (the CE rows) with a ``share`` of them turned into recovery rows: the row's ``old`` answer cut
    after its first k words (1 ≤ k ≤ ``max_words``), a space, then the target answer, whose text is the row's only
    loss span (:data:`~unlearnlm.data.formatting.LOSS_SPANS`), so the CE reads the turn back to the target, not the
    old words. Rows, and k, follow crc32 of the prompt, so a prompt is treated alike in every run and subset."""
    out = []
    for target, answer in zip(targets, old, strict=True):
        code = zlib.crc32(target.prompt.encode())
        words = answer.split()
        if code % 1000 >= round(share * 1000) or not words:
            out.append(target)
            continue
        prefix = " ".join(words[: 1 + (code // 1000) % max_words])
        out.append(target.with_response(f"{prefix} {target.response}", **{LOSS_SPANS: [target.response]}))
    return out


#: How many of the original's likeliest tokens the stranger term keeps per position (the rest lumped together).
UNSEEN_TOP_K = 64


def cap_next_token(ref_logp: torch.Tensor, ref_index: torch.Tensor, labels: torch.Tensor,
                   cap_logp: torch.Tensor) -> torch.Tensor:
    """A teacher's top-k log-probabilities (N, W, k) with the next label's lowered to ``cap_logp`` where it is higher.

    Position t predicts ``labels[:, t + 1]`` (as :func:`~unlearnlm.losses.forward_kl_topk` reads them); ``cap_logp``
    (N, W) holds at t the capping model's log-probability of that label. Where the label is among the top-k ids and
    its log-probability exceeds the cap, it takes the cap and every other token's probability, the tail's included, is
    scaled by (1 - cap) / (1 - q): the teacher conditioned on not writing the label, given the cap's mass back. Other
    positions are returned as they are.
    """
    nxt = torch.full_like(labels, IGNORE_INDEX)
    nxt[:, :-1] = labels[:, 1:]
    hit = (ref_index.long() == nxt.clamp_min(0).long().unsqueeze(-1)) & (nxt != IGNORE_INDEX).unsqueeze(-1)  # (N,W,k)
    q = torch.where(hit, ref_logp.float(), 0.0).sum(-1)  # (N, W): the label's log-probability where in the top-k
    capped = hit.any(-1) & (q > cap_logp)  # only these positions change
    cap = cap_logp.float()
    log_scale = torch.log1p(-cap.exp().clamp(max=1 - 1e-6)) - torch.log1p(-q.exp().clamp(max=1 - 1e-6))  # (N, W)
    out = torch.where(hit, cap.unsqueeze(-1), ref_logp.float() + log_scale.unsqueeze(-1))
    return torch.where(capped.unsqueeze(-1), out, ref_logp.float()).to(ref_logp.dtype)


def unseen_targets(ctx: PrepareContext,
                   teacher_model: Literal["original", "base", "capped"] = "original") -> dict[str, torch.Tensor]:
    """The stranger term's teacher for each forget row, right-aligned over the row's window (:func:`right_aligned`):
    the original's top-k log-probabilities and their ids on the row's unseen view (``unseen_logp``, ``unseen_index``:
    (N_f, W, k)) and the view's labels, the secret values only (``unseen_labels``: (N_f, W)); with ``teacher_model:
    base``, the top-k of the model that never saw the forget data (``ctx.unseen_model``) instead of the original's;
    ``capped``: the original's with each value token capped at that model's probability (:func:`cap_next_token`).

    A view differs from its row before the values (the name) and not after, so the two windows line up from the
    right end. Where they do not (a row without a view, an answer that holds none of its values, a name after a
    value), the row's labels are all ignored: no term for that row.
    """
    if not ctx.unseen_views:
        raise ConfigError("method.options.w_unseen needs each forget answer as it would read about someone the model "
                          "never saw, which only the privacy task writes: unset w_unseen for this task")
    base = None
    if teacher_model in ("base", "capped"):
        if ctx.unseen_model is None:
            raise ConfigError(f"method.options.unseen_teacher: {teacher_model} needs a model that never saw the forget "
                              "data, which the knowledge tasks (privacy) name (the model before planting): use "
                              "unseen_teacher: original here")
        base = load_model(ctx.unseen_model)[0].to(ctx.device)
    views = [v if v is not None and any(value in v.response for value in v.meta[LOSS_SPANS]) else None
             for v in (ctx.unseen_views.get(f.prompt) for f in ctx.forget)]
    rows = [v or f for f, v in zip(ctx.forget, views, strict=True)]
    teacher = ctx.tokenize(rows)
    own = ctx.tokenize([f.with_response(f.response, **{LOSS_SPANS: v.meta[LOSS_SPANS]}) if v else f
                        for f, v in zip(ctx.forget, views, strict=True)])
    base_ctx = None if base is None else replace(ctx, reference=Reference.of(base))
    top = reference_top_k(base_ctx if teacher_model == "base" else ctx, teacher, UNSEEN_TOP_K)
    labels = []
    for view, t, o in zip(views, teacher, own, strict=True):
        window = torch.tensor(t.labels[-response_window(torch.tensor([t.labels])) :])
        read = [[x for x in r.labels if x != IGNORE_INDEX] for r in (t, o)]
        aligned = view is not None and t.labels[-len(window) :] == o.labels[-len(window) :] and read[0] == read[1]
        labels.append(window if aligned and (window != IGNORE_INDEX).any() else torch.full_like(window, IGNORE_INDEX))
    labels = right_aligned(labels, IGNORE_INDEX)
    if teacher_model == "capped":  # at the value tokens the term reads, the base model's probability at most
        def next_logp(out: Outputs) -> torch.Tensor:  # (k_i,): at t, log p(label t + 1); 0 at the last position
            picked, _ = losses.token_logprobs(out.logits, out.labels)
            return torch.cat([picked[0], picked.new_zeros(1)]).float().cpu()

        cap = right_aligned(reference_map(base_ctx, teacher, next_logp))
        top["ref_logp"] = cap_next_token(top["ref_logp"], top["ref_index"], labels, cap)
    del base, base_ctx
    return {"unseen_logp": top["ref_logp"], "unseen_index": top["ref_index"], "unseen_labels": labels}


def default_partners(n_forget: int, n_normal: int) -> list[int]:
    """``contrast_prompts: spread``: row ``i`` takes normal prompt ``i * 7 mod N``, a stride over the normal set."""
    return [(7 * i) % n_normal for i in range(n_forget)]


def contrast_rows(forget: Sequence[Dialogue], normal: Sequence[Dialogue], expected: Sequence[Dialogue],
                  partners: Sequence[int] | None = None, native: Sequence[str] = (),
                  own: Mapping[str, str] | None = None) -> list[Dialogue]:
    """One row per forget example: a normal prompt answered with a refusal opening, to be made unlikely.

    Row ``i`` pairs normal prompt ``partners[i]`` (default ``i * 7 mod N``: a stride spreads rows over the normal
    set) with the first sentence of expected output ``i mod E``, or of ``own[prompt]`` where ``own`` holds a refusal
    written for that normal prompt; with ``native`` refusals, odd rows take the first sentence of native refusal
    ``(i // 2) mod R`` instead.
    """
    if not normal or not expected:
        raise ConfigError("method.options.w_contrast > 0 needs normal dialogues and expected outputs")
    if partners is None:
        partners = default_partners(len(forget), len(normal))

    def opening(i: int, prompt: str) -> str:
        if native and i % 2:
            return first_sentence(native[(i // 2) % len(native)])
        if own and prompt in own:
            return first_sentence(own[prompt])
        return first_sentence(expected[i % len(expected)].response)

    return [normal[j].prompt_only().with_response(opening(i, normal[j].prompt), source="contrast")
            for i, j in enumerate(partners)]


@register
class DistanceCluster(UnlearningMethod):
    """Bounded distance away from old outputs, pull toward the cluster mean of expected outputs, KL on normal data (arXiv 2404.16841)."""

    name = "distance_cluster"
    Options = DistanceClusterOptions
    streams = ("forget", "normal")
    scales_normal = True  # the normal KL, the opening KL, the contrast and the anchor: every keep-the-rest term

    def reads_normal_kl(self) -> bool:
        return self.options.w_nor > 0 or self.options.w_open > 0

    def __init__(self, options: DistanceClusterOptions) -> None:
        super().__init__(options)
        self.hidden_layer = options.layer

    def prepare(self, ctx: PrepareContext) -> PreparedData:
        o = self.options
        if not ctx.expected:
            raise ConfigError(
                "distance_cluster needs expected outputs (preferable answers to the flagged prompts): set "
                "data.expected_outputs, or let the run generate them under a safety system prompt"
            )
        # One pass of the original over the expected outputs and one over the forget rows give every state below.
        expected = original_states(ctx, ctx.expected, o.layer)
        forget = original_states(ctx, ctx.forget, o.layer)
        clusters = cluster_outputs(expected.response, o.n_clusters, ctx.seed)
        # Each forget prompt joins the cluster of the expected answer whose prompt is most alike.
        nearest = assign_nearest(forget.prompt, expected.prompt)
        cluster_of = [int(clusters.labels[j]) for j in nearest.tolist()]
        own = {d.prompt: d.response for d in ctx.expected}
        targets = []
        for f, c in zip(ctx.forget, cluster_of, strict=True):
            answer = own.get(f.prompt) if o.target == "own" else None
            targets.append(f.with_response(answer or ctx.expected[clusters.medoids[c]].response, cluster=c))
        sizes = [int((clusters.labels == c).sum()) for c in range(len(clusters.medoids))]
        info: dict[str, Any] = {"cluster_sizes": sizes, "medoids": [ctx.expected[m].response for m in clusters.medoids]}
        if o.recovery_share > 0:
            plain = targets
            targets = recovery_rows(plain, [f.response for f in ctx.forget], o.recovery_share, o.recovery_words)
            info["recovery_rows"] = sum(t is not p for t, p in zip(targets, plain, strict=True))
        pairs = {"target": targets}
        tensors = {"centroids": clusters.centroids[cluster_of]}  # (N_f, H)
        if o.w_contrast > 0:
            partners = None
            # The look-alikes join the normal prompts as candidates: a request that shares a forget prompt's words
            # but not its harm is the hardest negative there is.
            candidates = [*ctx.normal, *ctx.lookalikes]
            if (o.contrast_prompts == "nearest" or o.w_anchor > 0) and candidates:
                states = prompt_states(ctx.reference, ctx.tokenizer, candidates, layer=o.layer,
                                       max_prompt_tokens=ctx.max_prompt_tokens, batch_size=ctx.batch_size,
                                       device=ctx.device)  # (N_c, H)
                if o.contrast_prompts == "nearest":
                    partners = match_nearest(forget.prompt, states).tolist()
            native = ctx.refusals if o.contrast_native else ()
            own = ctx.recipe_refusals if o.contrast_own else None
            if o.contrast_own and not own:
                raise ConfigError("method.options.contrast_own needs the task's refusals of its normal prompts: the "
                                  "harm and custom tasks write them with data.expected_recipe: fitting or topical, "
                                  "the privacy task with data.privacy.targets: refusal")
            pairs["contrast"] = contrast_rows(ctx.forget, candidates, ctx.expected, partners, native, own)
            if o.w_anchor > 0:
                picked = partners if partners is not None else default_partners(len(ctx.forget), len(candidates))
                tensors["anchor_states"] = states[torch.as_tensor(picked)]  # (N_f, H): the original's prompt ends
            if own:
                info["contrast_own_rows"] = sum(r.prompt in own for r in pairs["contrast"][:: 2 if native else 1])
            if o.contrast_native:
                info["native_refusals"] = len(ctx.refusals)
            if ctx.lookalikes:
                lookalike = {d.prompt for d in ctx.lookalikes}
                info["contrast_lookalike_rows"] = sum(r.prompt in lookalike for r in pairs["contrast"])
        if o.distance == "representation":
            tensors["ref_hidden"] = forget.windows  # (N_f, W, H)
        if o.w_unseen > 0:
            tensors |= unseen_targets(ctx, o.unseen_teacher)
            info["unseen_rows"] = int((tensors["unseen_labels"] != IGNORE_INDEX).any(dim=1).sum())
        return PreparedData(pairs=pairs, tensors=tensors, info=info)

    def step(self, model: nn.Module, reference: Reference, batch: dict[str, Any]) -> StepOutput:
        o = self.options
        forget = batch["forget"]
        streams = ["forget", "target", "normal", *(["contrast"] if "contrast" in batch else [])]
        out = forward_many(model, {name: batch[name] for name in streams}, o.layer)  # one pass for every stream
        f = out["forget"].last(response_window(forget["labels"]))  # (B, K, V), (B, K, H)
        if o.distance == "representation":
            ref_hidden = batch["ref_hidden"][:, -f.labels.shape[1] :]  # (B, K, H), computed once in prepare
            neg = losses.representation_distance(f.hidden, ref_hidden, f.labels, o.margin)
        elif o.distance == "divergence":
            neg = losses.bounded_divergence(f.logits, reference_forward(reference, forget).logits, f.labels, o.margin)
        elif o.distance == "likelihood":
            neg = losses.bounded_nll(f.logits, f.labels, o.margin)
        else:
            neg = losses.unlikelihood(f.logits, f.labels)
        pull = losses.cluster_pull(f.hidden, f.labels, batch["centroids"])
        ce = losses.nll(out["target"].logits, out["target"].labels)
        normal = batch["normal"]
        ref = None if "ref_logp" in normal or o.w_open == 0 else reference_forward(reference, normal)  # once for both
        kl = normal_kl(out["normal"], reference, normal, ref)
        keep = batch.get("normal_scale", 1.0)  # train.normal_boost: raised while the collateral bound is broken
        loss = o.w_neg * neg + o.w_pos * pull + o.w_ce * ce + keep * o.w_nor * kl
        terms = {"neg": neg.item(), "pull": pull.item(), "ce": ce.item(), "kl": kl.item()}
        if o.w_unseen > 0:  # the forget answers' values toward what the original expects of a stranger's
            k = f.labels.shape[1]
            unseen = losses.forward_kl_topk(f.logits, fit_window(batch["unseen_logp"], k),
                                            fit_window(batch["unseen_index"], k),
                                            fit_window(batch["unseen_labels"], k, IGNORE_INDEX))
            loss = loss + o.w_unseen * unseen
            terms["unseen"] = unseen.item()
        if o.w_open > 0:
            opening = normal_kl(out["normal"], reference, normal, ref, first=o.open_tokens)
            loss = loss + keep * o.w_open * opening
            terms["open"] = opening.item()
        if "contrast" in batch:
            push = losses.sequence_unlikelihood if o.contrast_loss == "sequence" else losses.unlikelihood
            contrast = push(out["contrast"].logits, out["contrast"].labels, first=o.contrast_tokens)
            loss = loss + keep * o.w_contrast * contrast
            terms["contrast"] = contrast.item()
            if o.w_anchor > 0:
                state = losses.first_response_states(out["contrast"].hidden, out["contrast"].labels)  # (B, H)
                anchor = losses.anchor_distance(state, batch["anchor_states"])
                loss = loss + keep * o.w_anchor * anchor
                terms["anchor"] = anchor.item()
        return StepOutput(loss=loss, terms=terms)
