"""FACE: the frozen-codebook quantizer, the read-out and fold-in, and the faithfulness metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from face_app.descriptors import ConceptProjection, Descriptors, assign_words, codebook_words, stem_groups, word_stem
from training.face import FACE, info_nce, keyword_targets
from training.vocabulary import faithfulness, retrieval_metrics


def small_face(seed: int = 0, dim: int = 6, k: int = 4, vocab: int = 40, word_dim: int = 12) -> FACE:
    torch.manual_seed(seed)
    return FACE(dim, k, torch.randn(vocab, word_dim))


def greedy_reference(
    concepts: torch.Tensor, codebook: torch.Tensor, groups: list[int] | None = None
) -> list[list[int]]:
    """The quantizer's rule spelled out slowly: each concept, in order, takes its most similar
    word whose group (default: the word itself) no earlier concept took."""
    groups = groups or list(range(len(codebook)))
    similarity = F.normalize(concepts, dim=-1) @ F.normalize(codebook, dim=-1).T
    out = []
    for row in similarity:
        used: list[int] = []
        for concept in row:
            taken = {groups[i] for i in used}
            used.append(next(i for i in concept.argsort(descending=True).tolist() if groups[i] not in taken))
        out.append(used)
    return out


def test_quantizer_picks_the_nearest_unused_word_for_each_concept() -> None:
    torch.manual_seed(1)
    codebook, concepts = torch.randn(30, 8), torch.randn(16, 5, 8)
    assert assign_words(concepts, codebook).tolist() == greedy_reference(concepts, codebook)


def test_quantizer_picks_the_nearest_word_of_an_unused_group_for_each_concept() -> None:
    torch.manual_seed(3)
    codebook, concepts = torch.randn(40, 8), torch.randn(32, 6, 8)
    groups = torch.randint(0, 9, (40,))  # uneven groups, up to ~10 words each
    chosen = assign_words(concepts, codebook, groups)
    assert chosen.tolist() == greedy_reference(concepts, codebook, groups.tolist())
    assert all(len(set(groups[row].tolist())) == 6 for row in chosen)


def test_word_stem_groups_forms_of_one_word_and_keeps_short_words_whole() -> None:
    assert {word_stem(w) for w in ["explore", "exploring", "explored", "exploration", "explores", "explorers"]} == {
        "explor"
    }
    assert word_stem("warns") == word_stem("warnings") == "warn"
    assert word_stem("drama") == word_stem("dramas") == "drama"
    assert word_stem("dinosaur") == word_stem("dinosaurs") == "dinosaur"
    assert word_stem("comedies") == word_stem("comedy") == "comedy"
    assert word_stem("planning") == word_stem("planned") == "plan"
    assert word_stem("thing") == "thing" and word_stem("ring") == "ring"  # "-ing" would leave < 4 letters
    assert word_stem("crime") != word_stem("drama")
    assert stem_groups(["drama", "explore", "dramas", "comedy", "exploring"]).tolist() == [0, 1, 0, 3, 1]


def test_quantizer_gives_one_entity_distinct_stems_when_its_nearest_words_share_one() -> None:
    words = ["explore", "exploring", "explored", "exploration", "explores", "space", "rocket", "crime"]
    direction = torch.tensor([1.0, 0.0, 0.0, 0.0])
    # The five forms of "explore" are the nearest words of every concept, then space, rocket, crime.
    codebook = torch.stack(
        [direction + 0.01 * i * torch.tensor([0.0, 1.0, 0.0, 0.0]) for i in range(5)]
        + [torch.tensor([1.0, 0.3, 0.2, 0.0]), torch.tensor([1.0, 0.0, 0.6, 0.0]), torch.tensor([0.2, 0.0, 0.0, 1.0])]
    )
    concepts = direction.expand(2, 3, 4)
    assert [[words[i] for i in row] for row in assign_words(concepts, codebook).tolist()] == [
        ["explore", "exploring", "explored"]
    ] * 2
    by_stem = assign_words(concepts, codebook, stem_groups(words))
    assert [[words[i] for i in row] for row in by_stem.tolist()] == [["explore", "space", "rocket"]] * 2
    # The module's forward uses the same rule.
    face = FACE(4, 3, codebook, stem_groups(words))
    with torch.no_grad():
        face.projection.weight.copy_(torch.eye(4).expand(3, 4, 4))
        face.projection.bias.zero_()
    assert face(direction.expand(2, 4))[1].tolist() == by_stem.tolist()


def test_warm_start_targets_are_of_distinct_stems() -> None:
    words = ["explore", "exploring", "explored", "space", "rocket", "crime"]
    word_embeddings = torch.eye(6)  # word i's sentence embedding is axis i
    # Item 0's profile is closest to the three forms of "explore", then space, then rocket.
    profiles = [[1.0, 0.95, 0.9, 0.6, 0.5, 0], [0, 0, 0, 0.2, 0.1, 1], [0.1, 0.1, 0.1, 1, 0, 0], [0, 0, 0, 0, 1, 0.3]]
    items = F.normalize(torch.tensor(profiles), dim=-1)
    users, train = items[:2].clone(), [np.array([0]), np.array([1])]
    embeddings = torch.eye(6)  # 2 users then 4 items, each its own CF direction
    by_word = keyword_targets(embeddings, word_embeddings, users, items, train, 3)
    by_stem = keyword_targets(embeddings, word_embeddings, users, items, train, 3, stem_groups(words))
    assert [words[i] for i in by_word[2].tolist()] == ["explore", "exploring", "explored"]
    assert [words[i] for i in by_stem[2].tolist()] == ["explore", "space", "rocket"]
    assert all(len({word_stem(words[i]) for i in row}) == 3 for row in by_stem.tolist())


def test_quantizer_never_repeats_a_word_within_an_entity() -> None:
    torch.manual_seed(2)
    codebook = torch.randn(20, 8)
    same_concept_everywhere = torch.randn(10, 1, 8).expand(-1, 6, -1)
    chosen = assign_words(same_concept_everywhere, codebook)
    assert all(len(set(row)) == 6 for row in chosen.tolist())
    # They are the six nearest words, nearest first.
    nearest = (F.normalize(same_concept_everywhere[:, 0], dim=-1) @ F.normalize(codebook, dim=-1).T).topk(6).indices
    assert chosen.tolist() == nearest.tolist()


def test_straight_through_estimator_passes_the_gradient_to_the_projection() -> None:
    face = small_face()
    embeddings = torch.randn(5, 6, requires_grad=True)
    z, chosen, _, _ = face(embeddings)
    assert torch.allclose(z.detach(), face.codebook[chosen], atol=1e-6)  # forward: the codebook words
    weights = torch.randn_like(z)
    (z * weights).sum().backward()
    # Backward: identity through the quantizer, so d/dz_e = weights, and z_e = e/|e| @ W_k + b_k.
    assert torch.allclose(face.projection.bias.grad, weights.sum(0), atol=1e-5)
    expected = torch.einsum("bd,bke->kde", F.normalize(embeddings.detach(), dim=-1), weights)
    assert torch.allclose(face.projection.weight.grad, expected, atol=1e-5)
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0  # and on into the CF embeddings


def test_codebook_stays_frozen_while_the_module_trains() -> None:
    face = small_face()
    before = face.codebook.clone()
    assert all(p is not face.codebook for p in face.parameters())
    optimizer = torch.optim.Adam(face.parameters(), lr=0.1)
    for _ in range(3):
        _, _, commitment, reconstruction = face(torch.randn(8, 6))
        optimizer.zero_grad()
        (commitment + reconstruction).backward()
        optimizer.step()
    assert torch.equal(face.codebook, before)
    assert not face.codebook.requires_grad


def test_warm_start_recovers_an_exactly_linear_map_to_keywords() -> None:
    face = small_face(k=2, vocab=10)
    embeddings = torch.randn(64, 6)
    keywords = torch.stack([(embeddings[:, 0] > 0).long(), 2 + (embeddings[:, 1] > 0).long()], dim=1)
    face.warm_start(embeddings, keywords, ridge=0.0)
    predicted = assign_words(face.projection(embeddings), face.codebook)
    agreement = (predicted == keywords).float().mean()
    assert agreement > 0.8  # a linear map can only approximate step targets, but most land


def test_codebook_words_are_readable_whole_words_of_both_vocabularies() -> None:
    encoder = {"[CLS]": 0, "the": 1, "movie": 7, "##ing": 3, "comedy": 5, "ab": 6, "x2y": 8, "Noir": 9, "space": 10}
    llm = {"Ġmovie": 1, "Ġcomedy": 2, "Ġthe": 3, "space": 4, "Ġab": 5, "Ġnoir": 6}
    assert codebook_words(encoder, llm, frozenset({"the"})) == ["comedy", "movie"]


def test_info_nce_is_low_when_each_row_matches_its_own_target() -> None:
    targets = F.normalize(torch.eye(4), dim=-1)
    assert info_nce(targets, targets, 0.05) < 1e-3
    assert info_nce(targets.roll(1, dims=0), targets, 0.05) > 10


# --- Read-out and fold-in ------------------------------------------------------------------------


def two_cluster_readout() -> Descriptors:
    """Items 'a' and 'b' point at different pairs of words; every other piece is given by hand."""
    projection = ConceptProjection(4, 2, 4)
    with torch.no_grad():
        projection.weight.copy_(torch.eye(4).expand(2, 4, 4))
        projection.bias.zero_()
    codebook = torch.tensor(
        [[1.0, 0, 0, 0], [0.9, 0.3, 0, 0], [0, 0, 1.0, 0], [0, 0, 0.9, 0.3], [0, 1.0, 0, 1.0]]
    )
    items = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0.1, 0, 0.1]])
    users = torch.tensor([[2.0, 0, 0, 0]])
    words = ["space", "rocket", "crime", "heist", "dance"]
    readout = Descriptors(
        k=2, words=words, item_ids=["a", "b", "c"], user_ids=["u1"], item_embeddings=items,
        user_embeddings=users, codebook=codebook, word_groups=stem_groups(words), projection=projection,
        item_words=torch.zeros(0, 2, dtype=torch.long), user_words=torch.zeros(0, 2, dtype=torch.long),
        item_weights=torch.ones(3), user_norm=2.0,
    )
    readout.item_words = readout.word_indices(items)
    readout.user_words = readout.word_indices(users)
    return readout


def test_descriptors_name_the_nearest_words_of_items_and_users() -> None:
    readout = two_cluster_readout()
    assert readout.for_item("a") == ["space", "rocket"]
    assert readout.for_item("b") == ["crime", "heist"]
    assert readout.for_user("u1") == ["space", "rocket"]
    assert readout.describe(torch.tensor([[0, 0, 3.0, 0.2]])) == [["crime", "heist"]]


def test_fold_in_gives_valid_words_and_moves_when_items_are_added() -> None:
    readout = two_cluster_readout()
    embedding = readout.fold_in(["a"])
    assert embedding.shape == (4,) and torch.isclose(embedding.norm(), torch.tensor(2.0))
    before = readout.describe_history(["a"])
    after = readout.describe_history(["a", "b", "b", "b"])
    assert before == ["space", "rocket"]
    assert after == ["crime", "heist"]
    assert set(after) <= set(readout.words) and len(set(after)) == readout.k
    assert readout.describe_history(["a", "not-an-item"]) == before
    assert torch.equal(readout.fold_in([]), torch.zeros(4))


def test_readout_survives_save_and_load(tmp_path: Path) -> None:
    readout = two_cluster_readout()
    readout.save(tmp_path / "readout")
    loaded = Descriptors.load(tmp_path / "readout")
    assert loaded.words == readout.words and loaded.item_ids == readout.item_ids and loaded.k == 2
    assert torch.equal(loaded.item_embeddings, readout.item_embeddings)
    assert torch.equal(loaded.word_groups, readout.word_groups)
    # the frozen codebook is stored in half precision and read back as float32
    stored = load_file(tmp_path / "readout" / "readout.safetensors")["codebook"]
    assert stored.dtype == torch.float16 and loaded.codebook.dtype == torch.float32
    assert torch.allclose(loaded.codebook, readout.codebook, rtol=1e-3, atol=1e-4)
    assert loaded.for_item("b") == readout.for_item("b")
    assert loaded.describe_history(["a", "b", "b", "b"]) == ["crime", "heist"]


# --- Faithfulness metric -------------------------------------------------------------------------


class BagOfWords:
    """A tiny real text encoder: normalised word counts over a fixed vocabulary."""

    def __init__(self, vocabulary: list[str]) -> None:
        self.index = {w: i for i, w in enumerate(vocabulary)}

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), len(self.index))
        for row, text in enumerate(texts):
            for word in text.lower().replace(",", " ").replace(".", " ").split():
                if word in self.index:
                    out[row, self.index[word]] += 1
        return F.normalize(out, dim=-1)


def test_retrieval_metrics_on_known_ranks() -> None:
    profiles = torch.eye(20)
    assert retrieval_metrics(profiles, profiles) == {"hit@10": 1.0, "mrr": 1.0}
    # Each query is closest to the next profile, then its own: own rank 2 -> MRR 1/2.
    queries = F.normalize(profiles.roll(-1, dims=0) + 0.5 * profiles, dim=-1)
    assert retrieval_metrics(queries, profiles) == {"hit@10": 1.0, "mrr": 0.5}
    # Ties never flatter: identical profiles put the own one behind its twin.
    twins = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert retrieval_metrics(twins, twins)["mrr"] == 0.5


def test_faithfulness_finds_own_profiles_and_random_words_do_not() -> None:
    vocabulary = [f"w{i}" for i in range(200)]
    encoder = BagOfWords(vocabulary)
    generator = torch.Generator().manual_seed(123)  # not faithfulness's own seed for the random words
    own = [[vocabulary[i] for i in torch.randperm(200, generator=generator)[:4].tolist()] for _ in range(50)]
    profiles = encoder.encode_texts([" ".join(words) + "." for words in own])
    metrics = faithfulness(encoder, {"items": own}, {"items": profiles}, vocabulary, k=4)
    assert metrics["hit@10"] == 1.0 and metrics["mrr"] == 1.0
    assert metrics["random_hit@10"] < 0.5 and metrics["random_mrr"] < 0.3
    assert metrics["k"] == 4 and metrics["distinct_words"] == len({w for words in own for w in words})
