"""Stage `face`: FACE descriptors for LightGCN (arXiv 2510.15729, NeurIPS 2025), trained jointly with it.

The module, top to bottom:

    CF embedding e [d]
      -> ConceptProjection: K affine maps -> concept vectors z_e [K, D]   (D = MiniLM's 384)
      -> quantizer: each concept snaps to its nearest codebook word, no stem twice
         (codebook = MiniLM's frozen word-embedding rows of ~13k whole words that are
         also single SmolLM2 tokens; straight-through estimator: z = z_e + sg(z_q - z_e))
      -> decoder: Linear(K * D -> d) reconstructs e
      -> alignment: [CLS] z_1 .. z_K [SEP] through the frozen MiniLM (mean-pooled, as
         sentence-transformers encodes the text "w_1 ... w_K") vs the entity's text
         profile embedded by the same MiniLM: InfoNCE over a batch of users and items.

Loss = BPR + vq_weight * ||z_e - sg(z_q)||^2 + recons_weight * ||dec(z) - sg(e)||^2
     + align_weight * InfoNCE. As FACE does: start from the trained LightGCN (the cf
stage's run of the same seed), fit the projection to the fixed CF embeddings ("map": here
a closed-form warm start on profile keywords, `keyword_targets`, optionally followed by
gradient epochs), then train everything jointly with the CF tables at a lower learning
rate ("align"), early-stopped on valid NDCG@10. Recommendation scores are LightGCN's own
(<e_u, e_i> of the jointly trained CF embeddings); FACE changes them only through training.

Profiles and the frozen MiniLM: training/profiles.py. The descriptor vocabulary, the word measures and
faithfulness: training/vocabulary.py. The descriptors of every entity, the
read-out for serving (`face_app.descriptors.Descriptors`) and the faithfulness metrics
(does an entity's descriptor text retrieve its own profile, against random words?) are
written under `<workdir>/face/`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from face_app.descriptors import (
    ConceptProjection,
    Descriptors,
    assign_words,
    hub_penalty,
    load_codebook,
    pick_distinct,
    stem_groups,
)
from training.cf import LightGCN
from training.config import Config, FACEConfig
from training.data import SplitData
from training.loop import NegativeSampler, bpr_epoch, seed_everything, train_with_early_stopping
from training.metrics import TrainedRun
from training.profiles import TextEncoder, item_profiles, user_groups, user_profiles
from training.vocabulary import describing_words, domain_words, faithfulness, film_words, word_report
from training.workdir import MODEL_FILE, RUN_FILE, Workdir

MODEL_NAME = "LightGCN+FACE"
READOUT_ONLY = ("hub_penalty", "hub_neighbours")


# --- The FACE module ----------------------------------------------------------------------------


class FACE(nn.Module):
    """Projection -> frozen-codebook quantizer (STE, no repeats) -> decoder, with its losses.

    codebook: [V, D] frozen word vectors (a buffer: never trained). word_groups: int64 [V]
    word groups no entity takes twice (`stem_groups`; None: one group per word). `forward(e)`
    returns the straight-through concept vectors [B, K, D], the chosen word indices [B, K]
    and the commitment and reconstruction losses.
    """

    def __init__(self, dim: int, k: int, codebook: torch.Tensor, word_groups: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("codebook", codebook.clone())
        groups = torch.arange(len(codebook)) if word_groups is None else word_groups.clone()
        self.register_buffer("word_groups", groups, persistent=False)  # derived from the words, not saved
        self.projection = ConceptProjection(dim, k, codebook.shape[1])
        self.decoder = nn.Linear(k * codebook.shape[1], dim)

    def warm_start(self, embeddings: torch.Tensor, keywords: torch.Tensor, ridge: float = 1e-2) -> None:
        """Set the projection to the ridge regression of keyword vectors on CF embeddings.

        embeddings: [N, d] CF embeddings; keywords: int64 [N, K] codebook rows, entity n's
        k-th keyword as concept k's target. Closed form, one solve for all K concepts.
        """
        n, dim = embeddings.shape
        centred = embeddings - self.projection.centre
        x = torch.cat([F.normalize(centred, dim=-1), torch.ones(n, 1)], dim=1).double()  # as the projection sees it
        y = self.codebook[keywords].reshape(n, -1).double()  # [N, K * D]
        gram = x.T @ x + ridge * torch.eye(dim + 1, dtype=torch.float64) * x.pow(2).sum() / n
        solution = torch.linalg.solve(gram, x.T @ y).float().reshape(dim + 1, *self.projection.bias.shape)
        with torch.no_grad():
            self.projection.weight.copy_(solution[:dim].transpose(0, 1))
            self.projection.bias.copy_(solution[dim])

    def forward(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        z_e = self.projection(e)
        chosen = assign_words(z_e, self.codebook, self.word_groups)
        z_q = self.codebook[chosen]
        z = z_e + (z_q - z_e).detach()  # straight-through: forward z_q, backward to z_e
        commitment = F.mse_loss(z_e, z_q)
        reconstruction = F.mse_loss(self.decoder(z.flatten(1)), e.detach())
        return z, chosen, commitment, reconstruction


def keyword_targets(
    embeddings: torch.Tensor, word_embeddings: torch.Tensor, user_profiles: torch.Tensor,
    item_profiles: torch.Tensor, train: list[np.ndarray], k: int, word_groups: torch.Tensor | None = None,
    ridge: float = 1e-2,
) -> torch.Tensor:
    """Warm-start targets: the k words a CF embedding predicts best for its profile, best first.

    embeddings: [U + I, d] CF embeddings, users first; word_embeddings: [V, D] sentence
    embeddings of the codebook words alone; *_profiles: [U, D] / [I, D]; train: each
    user's training items; word_groups: as the quantizer's, so the k targets are of k
    different groups (stems). Returns int64 [U + I, k] codebook rows.

    1. A word's score for a profile is their similarity minus the word's mean similarity to
       every profile of that kind (so "movie" does not win everywhere). A user's scores are
       half their own profile's, half the mean of their training items' (their taste).
    2. Ridge regression from the CF embedding to those scores, and the top k of the
       prediction: words the CF embedding can tell apart (a title word it cannot predict
       gives way to the genre and theme words shared by similar items).
    """
    item_scores = item_profiles @ word_embeddings.T
    item_scores -= item_scores.mean(dim=0)
    user_scores = user_profiles @ word_embeddings.T
    user_scores -= user_scores.mean(dim=0)
    taste = torch.stack([item_scores[torch.tensor(items)].mean(0) if len(items) else item_scores.mean(0)
                         for items in train])
    scores = torch.cat([(user_scores + taste) / 2, item_scores])
    n, dim = embeddings.shape
    x = torch.cat([F.normalize(embeddings, dim=-1), torch.ones(n, 1)], dim=1).double()
    gram = x.T @ x + ridge * torch.eye(dim + 1, dtype=torch.float64) * x.pow(2).sum() / n
    coefficients = torch.linalg.solve(gram, x.T @ scores.double()).float()
    return pick_distinct((x.float() @ coefficients)[:, None], word_groups, k)


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over a batch: row i of anchors should match row i of positives (both L2-normalised)."""
    logits = anchors @ positives.T / temperature
    return F.cross_entropy(logits, torch.arange(len(anchors)))


class LightGCNFACE(nn.Module):
    """LightGCN and its FACE module, trained together; scores are LightGCN's."""

    def __init__(self, lightgcn: LightGCN, face: FACE) -> None:
        super().__init__()
        self.lightgcn, self.face = lightgcn, face

    def score(self, users: torch.Tensor, histories: list[np.ndarray]) -> torch.Tensor:
        return self.lightgcn.score(users, histories)


def train_face(
    data: SplitData, config: Config, seed: int, pretrained: dict[str, torch.Tensor] | None, text: TextEncoder,
    codebook: torch.Tensor, profiles: tuple[torch.Tensor, torch.Tensor], word_embeddings: torch.Tensor | None = None,
    word_groups: torch.Tensor | None = None,
) -> LightGCNFACE:
    """Fit FACE on a trained LightGCN (`pretrained` state), then train both jointly.

    pretrained None: LightGCN from its initialisation, so the joint phase is its whole training (no warm start:
    there is nothing learnt to regress keywords on).

    profiles: (user profile embeddings [U, D], item profile embeddings [I, D]), normalised.
    word_embeddings: [V, D] sentence embeddings of the codebook words, to warm-start the
        projection on `keyword_targets`; None keeps FACE's orthogonal initialisation.
    word_groups: int64 [V] word groups no entity takes twice (`word_groups(words, config)`).
    Returns the model in eval mode with the best weights (valid NDCG@10); `.history` holds
    the per-epoch log of the joint phase, `.map_seconds` the time of the map phase.
    """
    settings = config.face
    generator = seed_everything(seed)
    users, items = data.train_pairs()
    lightgcn = LightGCN(data.n_users, data.n_items, config.cf.lightgcn, (users, items))
    if pretrained is not None:
        lightgcn.load_state_dict(pretrained)
    user_final, item_final = lightgcn.user_item_embeddings()
    face = FACE(config.cf.lightgcn.dim, settings.k, codebook, word_groups)
    user_profiles_, item_profiles_ = profiles
    if word_embeddings is not None and pretrained is not None:
        entities = torch.cat([user_final, item_final])
        face.warm_start(
            entities,
            keyword_targets(
                entities, word_embeddings, user_profiles_, item_profiles_, data.train, settings.k, face.word_groups
            ),
        )
    model = LightGCNFACE(lightgcn, face)

    def sample_entities(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.randint(data.n_users, (count // 2,), generator=generator),
            torch.randint(data.n_items, (count - count // 2,), generator=generator),
        )

    def face_losses(user_final: torch.Tensor, item_final: torch.Tensor) -> torch.Tensor:
        u, i = sample_entities(settings.entities_per_step)
        z, _, commitment, reconstruction = face(torch.cat([user_final[u], item_final[i]]))
        loss = settings.vq_weight * commitment + settings.recons_weight * reconstruction
        if settings.align_weight > 0 and settings.align_entities > 0:
            n_users = min(len(u), settings.align_entities // 2)
            n_items = min(len(i), settings.align_entities - n_users)
            pick = torch.cat([torch.arange(n_users), len(u) + torch.arange(n_items)])
            described = text.encode_word_vectors(z[pick])
            targets = torch.cat([user_profiles_[u[:n_users]], item_profiles_[i[:n_items]]])
            loss = loss + settings.align_weight * info_nce(described, targets, settings.temperature)
        return loss

    # Map: fit projection and decoder to the fixed CF embeddings (no alignment yet).
    start = time.perf_counter()
    optimizer = torch.optim.Adam(face.parameters(), lr=settings.lr)
    fixed = torch.cat([user_final, item_final])
    for _ in range(settings.map_epochs):
        order = torch.randperm(len(fixed), generator=generator)
        for begin in range(0, len(order), settings.entities_per_step):
            _, _, commitment, reconstruction = face(fixed[order[begin : begin + settings.entities_per_step]])
            loss = settings.vq_weight * commitment + settings.recons_weight * reconstruction
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    map_seconds = time.perf_counter() - start

    # Align: everything jointly, the CF tables at a lower learning rate.
    optimizer = torch.optim.Adam(
        [
            {"params": face.parameters(), "lr": settings.lr},
            {"params": lightgcn.parameters(), "lr": settings.cf_lr},
        ]
    )
    sample_negatives = NegativeSampler(users, items, data.n_items, generator)
    batch_size = config.cf.lightgcn.batch_size

    def batch_loss(u: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        propagated = lightgcn.propagate()
        return lightgcn.bpr_loss(u, pos, neg, propagated) + face_losses(*propagated)

    def train_epoch() -> float:
        return bpr_epoch((users, items), sample_negatives, batch_size, generator, optimizer, batch_loss)

    model.history = train_with_early_stopping(model, data, train_epoch, settings, desc=f"LightGCN+FACE seed {seed}")
    model.map_seconds = map_seconds
    return model


# --- Read-out -----------------------------------------------------------------------------------


def build_readout(model: LightGCNFACE, data: SplitData, words: list[str], k: int, penalty_weight: float = 0.0,
                  neighbours: int = 10) -> Descriptors:
    """The serving read-out of a trained model: embeddings, projection, codebook, every entity's words.

    penalty_weight: the hub correction's weight (`face_app.descriptors.hub_penalty`, `neighbours` per word, over
    the items' concepts for items and the users' for users); 0 assigns the plain nearest words."""
    user_final, item_final = model.lightgcn.user_item_embeddings()
    penalty = None
    if penalty_weight > 0:  # each kind's hubs among its own concepts (users' concepts crowd other words than items')
        with torch.no_grad():
            penalty = penalty_weight * torch.stack([
                hub_penalty(model.face.projection(final).flatten(0, 1), model.face.codebook, neighbours)
                for final in (item_final, user_final)])
    degree = torch.as_tensor(data.item_counts(), dtype=torch.float32)
    readout = Descriptors(
        k=k,
        words=words,
        item_ids=data.items["item_id"].astype(str).tolist(),
        user_ids=data.users["user_id"].astype(str).tolist(),
        item_embeddings=item_final.clone(),
        user_embeddings=user_final.clone(),
        codebook=model.face.codebook.clone(),
        word_groups=model.face.word_groups.clone(),
        projection=model.face.projection,
        item_words=torch.zeros(0, k, dtype=torch.long),
        user_words=torch.zeros(0, k, dtype=torch.long),
        item_weights=degree.clamp_min(1.0).rsqrt(),
        user_norm=float(user_final.norm(dim=1).median()),
        word_penalty=penalty,
    )
    readout.item_words = readout.word_indices(item_final, "items")
    readout.user_words = readout.word_indices(user_final, "users")
    return readout


def report_samples(data: SplitData, n_items: int = 12, n_users: int = 5) -> tuple[list[int], list[int]]:
    """Entities shown in the report: half the items most popular, half obscure (5-15 training
    interactions, spread over the catalog); users spread over the index."""
    counts = data.item_counts()
    popular = np.argsort(-counts, kind="stable")[: n_items // 2].tolist()
    obscure_pool = np.flatnonzero((counts >= 5) & (counts <= 15))
    if len(obscure_pool) < n_items - len(popular):
        obscure_pool = np.argsort(counts, kind="stable")
    picks = np.linspace(0, len(obscure_pool) - 1, n_items - len(popular)).round().astype(int)
    obscure = [int(obscure_pool[p]) for p in picks if int(obscure_pool[p]) not in popular]
    users = np.linspace(0, data.n_users - 1, n_users).round().astype(int).tolist()
    return popular + obscure, users


# --- Stage `face` -------------------------------------------------------------------------------


def run_key(config: Config, words: Sequence[str] = ()) -> dict[str, Any]:
    """What a finished FACE run depends on: data, LightGCN and FACE settings, and the vocabulary's words."""
    return {
        "vocabulary": hashlib.sha256("\n".join(words).encode()).hexdigest()[:16],
        "data": dataclasses.asdict(config.data),
        "lightgcn": dataclasses.asdict(config.cf.lightgcn),
        # the hub correction acts on the read-out only: a finished run serves any weight of it
        "face": {k: v for k, v in dataclasses.asdict(config.face).items() if k not in READOUT_ONLY},
    }


def descriptor_vocabulary(text: TextEncoder, settings: FACEConfig, profiles: torch.Tensor,
                          anchors: torch.Tensor | None = None, genres: Sequence[str] = ()
                          ) -> tuple[list[str], torch.Tensor]:
    """The words FACE may choose from (`settings.vocabulary`, training/vocabulary.py; without the unsuitable
    words when `settings.suitable`, training/suitability.py; with the genre and era words SmolLM2 reads in
    several pieces when `settings.domain_words`, `training.vocabulary.domain_words` of `genres`) and their
    sentence embeddings [V, D]. profiles: every entity's profile embedding, for the words' relevance to the
    domain; anchors: the genres' sentence embeddings (`genre_anchors`), for the `film` rule."""
    from training.suitability import unsuitable

    words = load_codebook()
    embeddings = text.cached_encode(words)
    keep = list(range(len(words)))
    if settings.suitable:
        keep = [i for i in keep if not unsuitable(words[i])]
        print(f"[face] suitability: {len(words) - len(keep)} unsuitable codebook words left out")
    if settings.vocabulary == "describing":
        chosen = describing_words([words[i] for i in keep], embeddings[keep], profiles, settings.vocabulary_share)
        print(f"[face] vocabulary: {len(chosen):,} of {len(keep):,} words (one per lemma, nouns and adjectives, "
              f"the {settings.vocabulary_share:.0%} closest to the profiles)")
        keep = [keep[i] for i in chosen]
    elif settings.vocabulary == "film":
        assert anchors is not None, "the film vocabulary ranks words by their closeness to the genres"
        chosen = film_words([words[i] for i in keep], embeddings[keep], anchors, settings.vocabulary_share)
        print(f"[face] vocabulary: {len(chosen):,} of {len(keep):,} words (one per lemma, nouns and adjectives, "
              f"the {settings.vocabulary_share:.0%} closest to a genre)")
        keep = [keep[i] for i in chosen]
    chosen_words, chosen_embeddings = [words[i] for i in keep], embeddings[keep]
    if settings.domain_words:
        extra = [word for word in domain_words(genres, words, text.tokenizer.get_vocab())
                 if not (settings.suitable and unsuitable(word))]
        print(f"[face] vocabulary: {len(extra)} genre and era words SmolLM2 reads in pieces added: {', '.join(extra)}")
        chosen_words += extra
        chosen_embeddings = torch.cat([chosen_embeddings, text.cached_encode(extra)]) if extra else chosen_embeddings
    return chosen_words, chosen_embeddings


def word_groups(words: Sequence[str], config: Config) -> torch.Tensor | None:
    """The groups no entity takes two words of: stems (`face.distinct_stems`), or None (words)."""
    return stem_groups(words) if config.face.distinct_stems else None


def load_model(
    run_dir: Path, data: SplitData, config: Config, codebook: torch.Tensor, groups: torch.Tensor | None
) -> LightGCNFACE:
    """Rebuild a trained LightGCN+FACE from the run directory's weights, in eval mode."""
    state = load_file(run_dir / MODEL_FILE)
    lightgcn = LightGCN(data.n_users, data.n_items, config.cf.lightgcn, data.train_pairs())
    face = FACE(config.cf.lightgcn.dim, config.face.k, codebook, groups)
    model = LightGCNFACE(lightgcn, face)
    model.load_state_dict({**state, "face.codebook": codebook})
    return model.eval()


def trained_models(config: Config, workdir: Path, data: SplitData) -> Iterator[TrainedRun]:
    """The eval stage's view of this stage: LightGCN+FACE per seed (none when the stage did not run)."""
    paths = Workdir(workdir)
    found = paths.face_runs()
    if not found:
        print(f"[eval] no FACE runs in {paths.stage('face')}; LightGCN+FACE not scored")
        return
    # The raw tensors (the codebook as stored, fp16), as the eval stage has always read them.
    readout = load_file(paths.readout / "readout.safetensors")
    for seed, run_dir in found:
        meta = json.loads((run_dir / RUN_FILE).read_text())
        model = load_model(run_dir, data, config, readout["codebook"], readout["word_groups"])
        yield TrainedRun(MODEL_NAME, seed, model, meta)


def run(config: Config, workdir: Path) -> Path:
    """Stage `face`: LightGCN+FACE per seed, the read-out of the first seed, descriptors and their faithfulness.

    Needs the cf stage's LightGCN runs (`Workdir.cf_run`). Output (`training.workdir.Workdir`):
    `face_run(seed)` with model.safetensors and run.json (reused when the settings match), `readout`
    (`Descriptors.save`), `descriptors_file` (every item's and user's words), `report_extra("face")`
    (`descriptors` metrics and samples, merged into report.json).
    """
    paths = Workdir(workdir)
    data = SplitData.load(paths.data)
    settings: FACEConfig = config.face
    text = TextEncoder()
    profile_texts = {"users": user_profiles(data), "items": item_profiles(data.items)}
    profiles = {kind: text.cached_encode(texts) for kind, texts in profile_texts.items()}
    words, word_embeddings = descriptor_vocabulary(text, settings, torch.cat([profiles["users"], profiles["items"]]))
    codebook = text.word_vectors(words)
    groups = word_groups(words, config)
    if not settings.warm_start:
        word_embeddings = None
    key = run_key(config, words)
    first: LightGCNFACE | None = None
    for seed in config.cf.seeds:
        run_dir, run_json = paths.face_run(seed), paths.face_run(seed) / RUN_FILE
        if run_json.exists() and json.loads(run_json.read_text()).get("key") == key:
            print(f"[face] seed {seed}: reusing the finished run in {run_dir}")
            model = load_model(run_dir, data, config, codebook, groups)
        else:
            pretrained_path = paths.cf_run("LightGCN", seed) / MODEL_FILE
            if not pretrained_path.exists():
                raise FileNotFoundError(f"FACE starts from LightGCN: no {pretrained_path}; run the cf stage first")
            start = time.perf_counter()
            model = train_face(
                data, config, seed, load_file(pretrained_path), text, codebook, (profiles["users"], profiles["items"]),
                word_embeddings, groups,
            )
            seconds = time.perf_counter() - start
            run_dir.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != "face.codebook"}
            save_file(state, run_dir / MODEL_FILE)
            scored = [h for h in model.history if h.get("valid_NDCG@10") is not None]
            best = max(scored, key=lambda h: h["valid_NDCG@10"], default={})
            meta = {
                "model": MODEL_NAME, "seed": seed, "key": key, "seconds": seconds, "map_seconds": model.map_seconds,
                "best_epoch": best.get("epoch"), "history": model.history,
            }
            run_json.write_text(json.dumps(meta, indent=1))
            best_ndcg = best.get("valid_NDCG@10", float("nan"))
            print(f"[face] seed {seed}: {seconds:.1f} s, best valid NDCG@10 {best_ndcg:.4f}")
        first = first or model

    assert first is not None, "config.cf.seeds is empty"
    readout = build_readout(first, data, words, settings.k, settings.hub_penalty, settings.hub_neighbours)
    return publish(readout, paths, data, config, text, profile_texts, profiles, {})


def publish(readout: Descriptors, paths: Workdir, data: SplitData, config: Config, text: TextEncoder,
            profile_texts: dict[str, list[str]], profiles: dict[str, torch.Tensor], extra_metrics: dict[str, Any]
            ) -> Path:
    """Save the read-out and what the report says of it: every entity's shown words, faithfulness (against the
    round-2 profiles, `profiles`), the word measures and samples."""
    settings, words = config.face, readout.words
    readout.save(paths.readout)
    described = {
        "items": [readout.for_item(i) for i in readout.item_ids],  # the shown words (a display rule shows fewer)
        "users": [readout.for_user(u) for u in readout.user_ids],
    }
    paths.descriptors_file.write_text(
        json.dumps(
            {
                "items": dict(zip(readout.item_ids, described["items"], strict=True)),
                "users": dict(zip(readout.user_ids, described["users"], strict=True)),
            }
        )
    )
    metrics = faithfulness(text, described, profiles, words, settings.k, random_draws=settings.faithfulness_draws)
    groups_of = {"items": [list(g) for g in data.items["genres"]], "users": user_groups(data.users)}
    metrics["words"] = {kind: word_report(described[kind], groups_of[kind], words, settings.k) for kind in described}
    metrics["vocabulary"] = {"rule": settings.vocabulary, "words": len(words), "hub_penalty": settings.hub_penalty,
                             "suitable": settings.suitable, "mode": settings.mode}
    metrics.update(extra_metrics)
    sample_items, sample_users = report_samples(data)
    counts = data.item_counts()
    samples = {
        "items": [
            {
                "item_id": readout.item_ids[i], "profile": profile_texts["items"][i],
                "train_interactions": int(counts[i]), "descriptors": described["items"][i],
            }
            for i in sample_items
        ],
        "users": [
            {"user_id": readout.user_ids[u], "profile": profile_texts["users"][u], "descriptors": described["users"][u]}
            for u in sample_users
        ],
    }
    metrics["seed"] = config.cf.seeds[0]
    extra = {"descriptors": metrics, "descriptor_samples": samples}
    paths.report_extra("face").write_text(json.dumps(extra, indent=1))
    for kind, report in metrics["words"].items():
        ratio = metrics["per_kind"][kind]["hit@10"] / max(metrics["per_kind"][kind]["random_hit@10"], 1e-12)
        print(f"[face] {kind}: faithfulness {ratio:.1f}x random, {report['distinct_words']} distinct words, own-group "
              f"lift {report['own_group_lift']:.2f} (random {report['random_own_group_lift']:.2f}), "
              f"{len(report['common_uninformative'])} common uninformative words")
    print(
        f"[face] descriptors: hit@10 {metrics['hit@10']:.4f} (random {metrics['random_hit@10']:.4f}), "
        f"MRR {metrics['mrr']:.4f} (random {metrics['random_mrr']:.4f}), {metrics['distinct_words']} distinct words"
    )
    return paths.stage("face")
