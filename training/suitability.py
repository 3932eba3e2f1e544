"""Which descriptor words may be shown to people at all, and where a sensitive word may be shown.

Two rules, written before the words were judged (docs/descriptors.md quotes them):

1. **Unsuitable words never enter the vocabulary.** A word is unsuitable when it, its lemma or its normal form
   (`training.vocabulary.normal_form`) is on better-profanity's word list (a maintained list of sexual, crude and
   slur words, shipped inside its wheel), or on `SUPPLEMENT`: words the list lacks that a reader marked unsuitable
   on a card of the shipped bundle (issue 23), each with its reason.
2. **Sensitive-topic words are shown only where the entity's own data names them.** A word is sensitive when its
   normal form is one of `SENSITIVE_SEEDS` (illness, death, abortion, drugs, sexuality, race) or its MiniLM word
   embedding is at least `SENSITIVE_COSINE` close to one of them. A film may show a sensitive word only when the
   word's normal form is among the normal forms of the film's own title, genres or description; a user (a dataset
   user, a persona, a visitor's folded-in history) never shows one: what films a person watched does not say that
   the person is ill, on drugs or of a race.

Why a library list and not only our own: the list is maintained by others and reviewed for exactly this use (profane
words on screen); our supplement only adds the words our own cards showed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

import torch

from training.vocabulary import lemma, normal_form

# Words better-profanity lacks that a blind reader marked unsuitable on the shipped bundle's cards (issue 23).
SUPPLEMENT = {
    "slit": "crude (seen on G.I. Jane)",
    "porno": "sexual, a form of 'porn'",
    "pornographic": "sexual, a form of 'porn'",
    "pornography": "sexual, a form of 'porn'",
    "erotic": "sexual",
    "erotica": "sexual",
    "heterosexual": "sexuality (seen on Grosse Pointe Blank)",
    "homosexual": "sexuality",
    "prostitute": "sexual",
    "prostitution": "sexual",
    "arousal": "sexual (marked unsuitable by a reader, initial round)",
    "chick": "demeaning slang (marked unsuitable by a reader, initial round)",
    "escort": "sexual in this use (marked unsuitable by a reader, round later-4)",
}
# Seeds of the sensitive topics the issue names; their MiniLM neighbours join them (module docstring, rule 2). The
# seeds after the semicolon in each comment were added from the words the readers marked unsuitable in the sheet's
# rounds (bench/descriptor-judgments.json): initial, then later-1, later-2, later-4, later-5 and later-9 (shown or
# random words).
SENSITIVE_SEEDS = {
    # ; chemotherapy, cholera, paralysis, schizophrenia, psychotic, psycho; seen on read-outs of the levers
    # (bench.readout_levers) before they were judged: malaria, obesity, infection; coma, depression, tuberculosis,
    # diabetes, inflammation, psychiatric; vomiting (later-12, a random word); plague (later-15, a random word)
    "illness": ("illness", "disease", "cancer", "tumor", "leukemia", "aids", "hiv", "terminal", "diagnosis",
                "disability", "dementia", "epidemic", "chemotherapy", "cholera", "paralysis", "schizophrenia",
                "psychotic", "psycho", "malaria", "obesity", "infection", "coma", "depression", "tuberculosis",
                "diabetes", "inflammation", "psychiatric", "vomiting", "plague"),
    # ; genocide (and massacre, its neighbour); dying, drowning; mortality (later-5); homicide (later-15, shown on
    # Chasing Amy by the sixth display's lever)
    "death": ("death", "suicide", "funeral", "burial", "corpse", "cemetery", "euthanasia", "mourning", "genocide",
              "massacre", "dying", "drowning", "mortality", "homicide"),
    # ; fetal
    "abortion": ("abortion", "miscarriage", "pregnancy", "contraception", "maternity", "fetal"),
    # ; alcoholic; cannabis, abuse; alcoholism (later-4); injection (later-9)
    "drugs": ("drug", "heroin", "cocaine", "narcotic", "addiction", "overdose", "marijuana", "alcoholic", "cannabis",
              "abuse", "alcoholism", "injection"),
    # ; homosexuality, adultery
    "sexuality": ("sexuality", "sexual", "lesbian", "gay", "bisexual", "transgender", "intercourse", "genital",
                  "homosexuality", "adultery"),
    # ; aboriginal; apartheid (later-17, a random word on a user)
    "race": ("race", "racial", "racism", "ethnic", "ethnicity", "negro", "slave", "slavery", "tribe", "aboriginal",
             "apartheid"),
}
# Chosen by reading the neighbours of the seeds in the shipped codebook (`python -m training.suitability`): at 0.7
# a seed's neighbours are its forms and near-synonyms (cancer: tumor, carcinoma; heroin: cocaine); at 0.6 they reach
# words that are not sensitive (pregnancy: baby, mother).
SENSITIVE_COSINE = 0.7
TOKEN = re.compile(r"[a-z]+")


@cache
def profanity_list() -> frozenset[str]:
    """better-profanity's word list (its single words, lowercase), read from the file inside its wheel."""
    import better_profanity

    path = Path(better_profanity.__file__).with_name("profanity_wordlist.txt")
    return frozenset(w.strip().lower() for w in path.read_text().splitlines() if w.strip() and " " not in w.strip())


def unsuitable(word: str) -> bool:
    """Rule 1: the word, its lemma or its normal form is on better-profanity's list or on `SUPPLEMENT`."""
    listed = profanity_list() | frozenset(SUPPLEMENT)
    return any(form in listed for form in {word, lemma(word), normal_form(word)})


def sensitive_topics(words: Sequence[str], word_embeddings: torch.Tensor, seed_embeddings: torch.Tensor,
                     seeds: Sequence[str], threshold: float = SENSITIVE_COSINE) -> list[str | None]:
    """Rule 2's topic of each word, or None. word_embeddings: [V, D], seed_embeddings: [S, D] MiniLM embeddings of
    the words and of `seeds` (normalised); `seeds` flattened from SENSITIVE_SEEDS in their order."""
    topic_of = {seed: topic for topic, group in SENSITIVE_SEEDS.items() for seed in group}
    seed_forms = {normal_form(s): topic_of[s] for s in seeds}
    similarity = word_embeddings @ seed_embeddings.T  # [V, S]
    best, where = similarity.max(dim=1)
    out = []
    for i, word in enumerate(words):
        if normal_form(word) in seed_forms:
            out.append(seed_forms[normal_form(word)])
        elif float(best[i]) >= threshold:
            out.append(topic_of[seeds[int(where[i])]])
        else:
            out.append(None)
    return out


def named_in(text: str) -> frozenset[str]:
    """The normal forms of the words of an entity's own data text (title, genres, description)."""
    return frozenset(normal_form(t) for t in TOKEN.findall(text.lower()))


def supported(word: str, forms: Iterable[str]) -> bool:
    """Rule 2's support: the word's normal form is among the entity's own data words (`named_in`)."""
    return normal_form(word) in set(forms)


def seed_words() -> list[str]:
    return [seed for group in SENSITIVE_SEEDS.values() for seed in group]


def main() -> None:
    """Print, for the shipped codebook, the words each rule removes (what docs/descriptors.md quotes)."""
    from face_app.descriptors import load_codebook
    from training.profiles import TextEncoder

    words = load_codebook()
    text = TextEncoder()
    topics = sensitive_topics(words, text.cached_encode(words), text.encode_texts(seed_words()), seed_words())
    removed = [w for w in words if unsuitable(w)]
    print(f"unsuitable (rule 1): {len(removed)} of {len(words)} codebook words: {', '.join(removed)}")
    for topic in SENSITIVE_SEEDS:
        found = [w for w, t in zip(words, topics, strict=True) if t == topic]
        print(f"sensitive, {topic} (rule 2): {len(found)}: {', '.join(found)}")


if __name__ == "__main__":
    main()
