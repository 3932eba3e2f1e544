"""Stage `index`: learned item indices (LC-Rec) from an RQ-VAE over item embeddings.

1. Item embeddings: MiniLM (all-MiniLM-L6-v2) of "title (year). genres", optionally
   concatenated with the LightGCN item embedding of the cf stage (`index.embedding:
   text+cf`), each part L2-normalised; or a CF model's item embeddings alone (`lightgcn`,
   `sasrec`), so that items close in the code are close in who watches them.
2. RQ-VAE: an MLP encoder to a small latent, `levels` residual codebooks of
   `codebook_size` codes (each initialised by k-means on the residuals the previous
   levels leave), an MLP decoder; loss = reconstruction MSE + per level the codebook
   term |sg(r) - e|^2 + beta |r - sg(e)|^2, straight-through gradients to the encoder.
3. Collision-free assignment (LC-Rec's idea of re-assigning the last level): items that
   share the first `levels - 1` codes get distinct last-level codes, matched greedily by
   distance of their last residual to each code, so no two items share an index.

Output: `<workdir>/index/item_index.json` (`face_app.index.ItemIndex`) and
`<workdir>/index/report_extra.json` = `{"index": {levels, codebook_size, collisions,
code_usage, recon_loss, ...}}`, which the eval stage merges into report.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from face_app.catalog import TitleEncoder, cached_embeddings
from face_app.index import ItemIndex
from face_app.prompts import item_title
from face_app.sources import cache_dir
from training.config import Config, IndexConfig, IndexEmbedding, torch_threads
from training.data import SplitData
from training.workdir import MODEL_FILE, Workdir


def item_texts(items: pd.DataFrame) -> list[str]:
    """`Toy Story (1995). Animation, Children's, Comedy` per catalog row."""
    texts = []
    for title, year, genres in zip(items["title"], items["year"], items["genres"], strict=True):
        year = None if pd.isna(year) else int(year)
        texts.append(f"{item_title(title, year)}. {', '.join(genres)}")
    return texts


def text_embeddings(texts: list[str]) -> torch.Tensor:
    """float [N, 384]: all-MiniLM-L6-v2 embeddings (L2-normalised), from the pinned offline package.

    Cached in `<cache>/embeddings/` under a hash of the texts (the catalog's own cache): encoding a
    catalog is most of this stage's time, and the same catalog is embedded again on every rebuild.
    """
    return torch.from_numpy(cached_embeddings(TitleEncoder(), texts, cache_dir() / "embeddings"))


# index.embedding -> (cf model, the weight holding its item embeddings, rows to skip at the top)
CF_TABLES = {"lightgcn": ("LightGCN", "item_emb.weight", 0), "sasrec": ("SASRec", "item_emb.weight", 1)}


def cf_item_embeddings(workdir: Path, model: str = "lightgcn") -> torch.Tensor:
    """float [N, d]: the item embeddings of the cf stage's first run of `model` (`lightgcn`: its ego embeddings;
    `sasrec`: its input/output item table, padding row dropped), L2-normalised."""
    name, key, skip = CF_TABLES[model]
    paths = Workdir(workdir)
    runs = paths.cf_runs(name)
    if not runs:
        raise FileNotFoundError(f"an index from {model} embeddings needs a {name} run in {paths.stage('cf')}")
    return F.normalize(load_file(runs[0][1] / MODEL_FILE)[key][skip:].float(), dim=1)


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if n < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding, then Lloyd's iterations: float [N, d] -> centroids [k, d] (seeded; an empty
    cluster keeps its centroid; with fewer points than codes, points are reused)."""
    centroids = x[torch.randint(len(x), (1,), generator=generator)]
    while len(centroids) < k:
        nearest = torch.cdist(x, centroids).min(dim=1).values.square()
        weights = nearest if nearest.sum() > 0 else torch.ones_like(nearest)
        centroids = torch.cat([centroids, x[torch.multinomial(weights, 1, generator=generator)]])
    centroids = centroids.clone()
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


class RQVAE(nn.Module):
    """Encoder -> residual quantizer (`levels` codebooks) -> decoder."""

    def __init__(self, in_dim: int, config: IndexConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = mlp([in_dim, *config.hidden, config.latent_dim])
        self.decoder = mlp([config.latent_dim, *reversed(config.hidden), in_dim])
        self.codebooks = nn.ParameterList(
            nn.Parameter(torch.zeros(config.codebook_size, config.latent_dim)) for _ in range(config.levels)
        )

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, generator: torch.Generator) -> None:
        """k-means on each level's residuals, level by level."""
        residual = self.encoder(x)
        for codebook in self.codebooks:
            codebook.copy_(kmeans(residual, len(codebook), self.config.kmeans_iters, generator))
            residual = residual - codebook[torch.cdist(residual, codebook).argmin(dim=1)]

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """z [N, D] -> (quantized [N, D], codes int64 [N, levels], codebook loss, last residual [N, D])."""
        residual, quantized, loss, codes = z, torch.zeros_like(z), z.new_zeros(()), []
        for level, codebook in enumerate(self.codebooks):
            if level == len(self.codebooks) - 1:
                last_residual = residual
            code = torch.cdist(residual.detach(), codebook).argmin(dim=1)
            chosen = codebook[code]
            commitment = self.config.beta * F.mse_loss(residual, chosen.detach())
            loss = loss + F.mse_loss(chosen, residual.detach()) + commitment
            quantized = quantized + chosen
            residual = residual - chosen.detach()
            codes.append(code)
        quantized = z + (quantized - z).detach()  # straight-through
        return quantized, torch.stack(codes, dim=1), loss, last_residual

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [N, in] -> (loss, reconstruction [N, in], codes [N, levels])."""
        quantized, codes, codebook_loss, _ = self.quantize(self.encoder(x))
        recon = self.decoder(quantized)
        return F.mse_loss(recon, x) + codebook_loss, recon, codes

    @torch.no_grad()
    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int64 [N, levels] -> decoded embeddings [N, in]."""
        quantized = sum(codebook[codes[:, level]] for level, codebook in enumerate(self.codebooks))
        return self.decoder(quantized)


def capacity_assign(distances: torch.Tensor, capacity: int) -> list[int]:
    """Give each row a column, at most `capacity` rows per column, nearest pairs first.

    distances: float [n, k] with n <= capacity * k. A row gets its nearest column unless
    rows that are even nearer to that column have filled it.
    """
    n, k = distances.shape
    chosen, load, left = [-1] * n, [0] * k, n
    for flat in torch.argsort(distances.flatten(), stable=True).tolist():
        row, column = divmod(flat, k)
        if chosen[row] < 0 and load[column] < capacity:
            chosen[row], load[column], left = column, load[column] + 1, left - 1
            if not left:
                break
    return chosen


def collision_free_codes(model: RQVAE, x: torch.Tensor) -> torch.Tensor:
    """codes int64 [N, levels], no two items alike.

    Items that share their first `levels - 1` codes get distinct last codes (nearest free
    code to their last residual). Should more than `codebook_size` items share such a
    prefix, the level before the last is re-assigned first with at most `codebook_size`
    items per code, spilling the farthest items to their next-nearest codes.
    """
    size, levels = model.config.codebook_size, model.config.levels
    with torch.no_grad():
        residual, residuals, codes = model.encoder(x), [], []
        for codebook in model.codebooks:
            residuals.append(residual)
            codes.append(torch.cdist(residual, codebook).argmin(dim=1))
            residual = residual - codebook[codes[-1]]
    codes_t = torch.stack(codes, dim=1)
    for level, capacity in ((levels - 2, size), (levels - 1, 1)):
        if level < 0:
            continue
        with torch.no_grad():
            if level == levels - 1 and levels >= 2:  # the last residual follows any re-assigned code before it
                residuals[level] = residuals[level - 1] - model.codebooks[level - 1][codes_t[:, level - 1]]
            distances = torch.cdist(residuals[level], model.codebooks[level])
        groups: dict[tuple[int, ...], list[int]] = {}
        for item, prefix in enumerate(codes_t[:, :level].tolist()):
            groups.setdefault(tuple(prefix), []).append(item)
        for prefix, members in groups.items():
            if len(members) > capacity * size:
                raise ValueError(
                    f"{len(members)} items share the prefix {prefix}; raise index.codebook_size or index.levels"
                )
            codes_t[members, level] = torch.tensor(capacity_assign(distances[members], capacity))
    return codes_t


def train_rqvae(x: torch.Tensor, config: IndexConfig) -> tuple[RQVAE, list[float]]:
    """Train on item embeddings x [N, in] (mini-batches of `batch_size`); returns (model, loss per epoch)."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = RQVAE(x.shape[1], config)
    model.init_codebooks(x, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    losses = []
    for _ in tqdm(range(config.epochs), desc="RQ-VAE", leave=False, mininterval=5):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), config.batch_size):
            batch = x[order[start : start + config.batch_size]]
            loss, _, _ = model(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        losses.append(total / len(x))
    return model.eval(), losses


def item_embeddings(config: Config, workdir: Path, items: pd.DataFrame) -> torch.Tensor:
    """The RQ-VAE's input per `config.index.embedding`: `text` (MiniLM of title, year, genres), `text+cf` (and
    the LightGCN item embedding), or a CF model's item embeddings alone (`lightgcn`, `sasrec`)."""
    kind = config.index.embedding
    if kind in CF_TABLES:
        return cf_item_embeddings(workdir, kind)
    if kind not in get_args(IndexEmbedding):
        raise ValueError(f"index.embedding must be one of {get_args(IndexEmbedding)}, not {kind!r}")
    text = text_embeddings(item_texts(items))
    return text if kind == "text" else torch.cat([text, cf_item_embeddings(workdir)], dim=1)


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per dimension.

    Unit-norm 384-d embeddings have a per-dimension variance near 1/384; at that scale the
    reconstruction term is negligible next to the codebook terms and every code collapses to one.
    """
    return (x - x.mean(dim=0)) / x.std(dim=0).clamp_min(1e-6)


def build_index(x: torch.Tensor, item_ids: list[str], config: IndexConfig) -> ItemIndex:
    """Train the RQ-VAE on x [N, in] (standardized first) and give every item a distinct code; metrics in `meta`."""
    x = standardize(x)
    with torch_threads(config.threads):
        model, losses = train_rqvae(x, config)
    with torch.no_grad():
        _, _, raw = model(x)
    codes = collision_free_codes(model, x)
    recon_loss = float(F.mse_loss(model.reconstruct(codes), x))
    meta = {
        "levels": config.levels,
        "codebook_size": config.codebook_size,
        "embedding": config.embedding,
        "recon_loss": recon_loss,
        "collisions_before_assignment": len(raw) - len({tuple(c) for c in raw.tolist()}),
        "final_train_loss": losses[-1] if losses else None,
    }
    index = ItemIndex(item_ids, [tuple(c) for c in codes.tolist()], config.codebook_size, meta)
    index.meta["collisions"] = index.collisions()
    index.meta["code_usage"] = index.code_usage()
    return index


def run(config: Config, workdir: Path) -> Path:
    """Stage `index`: write `Workdir.index_file` and the stage's `report_extra.json`."""
    paths = Workdir(workdir)
    data = SplitData.load(paths.data)
    x = item_embeddings(config, workdir, data.items)
    index = build_index(x, data.items["item_id"].astype(str).tolist(), config.index)
    index.save(paths.index_file)
    keys = ("levels", "codebook_size", "collisions", "code_usage", "recon_loss", "embedding",
            "collisions_before_assignment")
    report = {key: index.meta[key] for key in keys}
    paths.report_extra("index").write_text(json.dumps({"index": report}, indent=1))
    usage = ", ".join(f"{u:.2f}" for u in report["code_usage"])
    print(f"[index] {len(index)} items, collisions {report['collisions']} "
          f"(before assignment {report['collisions_before_assignment']}), code usage [{usage}], "
          f"recon loss {report['recon_loss']:.4f}")
    return paths.index_file
