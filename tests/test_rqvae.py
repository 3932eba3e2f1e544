"""The RQ-VAE of the index stage: k-means, collision-free last level, index metrics."""

from __future__ import annotations

import torch

from training.config import IndexConfig
from training.rqvae import RQVAE, build_index, capacity_assign, collision_free_codes, kmeans, text_embeddings


def test_kmeans_finds_separated_clusters() -> None:
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(30, 2, generator=generator) for c in centers])
    found = kmeans(points, 3, iters=20, generator=generator)
    distance = torch.cdist(centers, found).min(dim=1).values
    assert (distance < 0.2).all()


def test_duplicate_embeddings_get_distinct_codes() -> None:
    config = IndexConfig(levels=2, codebook_size=4, latent_dim=4, hidden=[8], epochs=5, batch_size=8)
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(3, 6, generator=generator)
    x = torch.cat([base[0].expand(4, 6), base[1].expand(3, 6), base[2:]])  # 4 + 3 identical rows
    model = RQVAE(6, config)
    model.init_codebooks(x, generator)
    with torch.no_grad():
        _, raw, _, _ = model.quantize(model.encoder(x))
    assert len({tuple(c) for c in raw.tolist()}) < len(x)  # the plain quantizer collides
    codes = collision_free_codes(model, x)
    assert len({tuple(c) for c in codes.tolist()}) == len(x)


def test_an_overfull_prefix_spills_to_neighbouring_codes() -> None:
    config = IndexConfig(levels=2, codebook_size=4, latent_dim=4, hidden=[8], epochs=1)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 6, generator=generator).expand(10, 6).clone()  # 10 identical items, 4 last-level codes
    model = RQVAE(6, config)
    model.init_codebooks(torch.randn(20, 6, generator=generator), generator)
    codes = collision_free_codes(model, x)
    assert len({tuple(c) for c in codes.tolist()}) == 10
    assert max(torch.bincount(codes[:, 0]).tolist()) <= 4 and len(set(codes[:, 0].tolist())) >= 3


def test_capacity_assignment_fills_nearest_first() -> None:
    distances = torch.tensor([[0.0, 1.0], [0.1, 2.0], [0.2, 0.3]])
    assert capacity_assign(distances, capacity=2) == [0, 0, 1]
    assert capacity_assign(distances[:2], capacity=1) == [0, 1]  # row 1 is nearer to 0, but row 0 is nearer still


def test_build_index_reports_zero_collisions_and_usage() -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(60, 16, generator=generator)
    config = IndexConfig(levels=3, codebook_size=8, latent_dim=8, hidden=[32], epochs=20, batch_size=32)
    index = build_index(x, [str(i) for i in range(60)], config)
    assert index.collisions() == 0 and index.meta["collisions"] == 0
    assert len(index) == 60 and index.levels == 3
    assert len(index.meta["code_usage"]) == 3 and all(0 < u <= 1 for u in index.meta["code_usage"])
    assert index.meta["code_usage"][0] > 0.5  # k-means init spreads the first level
    assert 0.0 < index.meta["recon_loss"] < 2.0


def test_text_embeddings_are_normalised_and_cached(face_app_cache) -> None:
    texts = ["Heat (1995). Action, Crime, Thriller", "Toy Story (1995). Animation, Children's, Comedy"]
    first = text_embeddings(texts)
    assert first.shape == (2, 384) and torch.allclose(first.norm(dim=1), torch.ones(2), atol=1e-4)
    assert len(list((face_app_cache / "embeddings").glob("*.safetensors"))) >= 1
    assert torch.equal(text_embeddings(texts), first)
