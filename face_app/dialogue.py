"""What a visitor says, parsed: the conversation state and the follow-up parser (pure Python, no model).

`ConversationState` is one browser session's memory, the question it is waiting on included.
`parse(message, catalog)` turns a message into a `Request`: the titles it names surely and the ones it names
uncertainly (typo-tolerant, through `Catalog.find_titles`), and the follow-ups
the engine understands: "more like the second one", "something darker/lighter", "from the 90s",
"a comedy", "seen it", "not that", "why that one?", "show them again", "start over". Words of control
phrases name a film only in title case, so "something darker" or "a war movie" never names one.
`read_answer(request, question)` reads a reply to "Did you mean A or B?": "the first", "2", a title,
"the 1977 one", "neither".
`clean_message` is what every message goes through first: control characters, lone surrogates and
bidirectional overrides out, whitespace collapsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from face_app.catalog import Catalog, Mention

ORDINALS = {
    "first": 0, "1st": 0, "top": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "4th": 3,
    "fifth": 4, "5th": 4, "sixth": 5, "6th": 5, "seventh": 6, "7th": 6, "eighth": 7, "8th": 7, "ninth": 8,
    "9th": 8, "tenth": 9, "10th": 9, "last": -1,
}
_ORDINAL = re.compile(r"\b(?:the\s+)?(" + "|".join(ORDINALS) + r")(?:\s+(?:one|movie|film|pick))?\b|#\s*(\d{1,2})\b")
# Genres as people say them -> the dataset's genre names.
GENRE_WORDS = {
    "action": "Action", "adventure": "Adventure", "adventures": "Adventure", "animation": "Animation",
    "animated": "Animation", "cartoon": "Animation", "cartoons": "Animation", "children": "Children's",
    "children's": "Children's", "kids": "Children's", "family": "Children's", "comedy": "Comedy",
    "comedies": "Comedy", "crime": "Crime", "documentary": "Documentary", "documentaries": "Documentary",
    "drama": "Drama", "dramas": "Drama", "fantasy": "Fantasy", "noir": "Film-Noir", "film-noir": "Film-Noir",
    "horror": "Horror", "musical": "Musical", "musicals": "Musical", "mystery": "Mystery", "mysteries": "Mystery",
    "romance": "Romance", "romantic": "Romance", "romcom": "Romance", "sci-fi": "Sci-Fi", "scifi": "Sci-Fi",
    "science fiction": "Sci-Fi", "thriller": "Thriller", "thrillers": "Thriller", "war": "War",
    "western": "Western", "westerns": "Western",
}
_GENRE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, GENRE_WORDS), key=len, reverse=True)) + r")\b")
# Mood shifts map onto genres, which is what the catalog knows about tone.
DARK_GENRES = frozenset({"Horror", "Thriller", "Crime", "Film-Noir", "War", "Mystery"})
LIGHT_GENRES = frozenset({"Comedy", "Children's", "Animation", "Musical", "Romance", "Family"})
_DARKER = re.compile(r"\b(darker|dark|grimmer|grim|bleak|scarier|scary|creepier|more serious|edgier|intense)\b")
_LIGHTER = re.compile(r"\b(lighter|light|funnier|funny|happier|happy|cheerful|feel[- ]good|upbeat|fun)\b")
_DECADE = re.compile(r"\b(?:the\s+)?(?:(19|20)?(\d)0'?s|'(\d)0s)\b")
_BEFORE = re.compile(r"\b(?:before|older than|pre)[- ](\d{4})\b")
_AFTER = re.compile(r"\b(?:after|since|newer than|post)[- ](\d{4})\b")
_YEAR = re.compile(r"\b(?:from|in|of)\s+((?:19|20)\d\d)\b")
_ANY_TIME = re.compile(r"\b(any (?:year|decade|time|era)|whenever)\b")
_START_OVER = re.compile(r"\b(start over|start again|restart|reset|forget (?:it|everything|all that)|new start)\b")
_WHY = re.compile(r"\bwhy\b")
_SEEN = re.compile(r"\b(seen (?:it|that|this|them|those)|already (?:seen|watched)|(?:i'?ve|i have) (?:seen|watched)"
                   r"|watched (?:it|that|this)|seen the)\b")
_REJECT = re.compile(r"\b(not (?:that|this|it|those|the)|no(?:t)? thanks|don'?t (?:like|want)|didn'?t like|hate[ds]?"
                     r"|dislike[ds]?|skip|nope|not for me|not interested)\b")
_MORE_LIKE = re.compile(r"\b(more like|similar to|something like|like the|in the vein of|along the lines of)\b")
_AGAIN = re.compile(r"\b(again|show (?:them|those|me those) (?:again|once more)|repeat)\b")
_CONTROL = [_START_OVER, _WHY, _SEEN, _REJECT, _MORE_LIKE, _AGAIN, _DARKER, _LIGHTER, _DECADE, _BEFORE, _AFTER, _YEAR,
            _ANY_TIME, _GENRE, _ORDINAL]
# A plain request for (more) picks: understood, though it names nothing.
_ASK = re.compile(r"\b(recommend\w*|suggest\w*|picks?|more|next|another|others?|ideas?|what (?:should|could|can|"
                  r"shall) i (?:watch|see)|watch|show me|give me|anything|something|surprise me|go on|go ahead)\b")
# Words that announce a title ("I loved ..."): when nothing after them is found, the reply says so.
_NAMING = re.compile(r"\b(lov(?:e|ed|ing)|lik(?:e|ed|ing)|enjoy(?:ed)?|adored?|watched|saw|seen|favou?rites?|fan of)\b")
# Control characters (Unicode category Cc) read as spaces; lone surrogates (no UTF-8 encoder accepts them) and
# the characters that change how the rest of a line is displayed (bidirectional overrides, isolates) are dropped.
_CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f]")
_DROPPED = re.compile("[\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
_NEITHER = re.compile(r"(?:no|nope|nah|neither|none|wrong|not (?:those|these|them|either|really))"
                      r"(?: (?:of them|of those|of these|thanks|thank you|sorry))?")
_YES = re.compile(r"(?:yes|yeah|yep|yup|right|correct|exactly|sure|that one)(?: please)?")
_PICK = re.compile(r"(?:(?:yes|yeah|i mean|i meant|it'?s)\s+)?(?:the\s+)?(?:(first|second|third|1st|2nd|3rd|last)"
                   r"|(?:#|number |option )?([1-9]))(?:\s+(?:one|film|movie|option))?(?:\s+please)?")
_THE_YEAR = re.compile(r"(?:the\s+)?((?:18|19|20)\d\d)(?:\s+(?:one|film|movie|version))?")
NEITHER = -1  # `read_answer`: the visitor wants none of the choices
_FILLER = re.compile(r"\b(that one|this one|that|this|one|ones|it|something|anything|movie|movies|film|films|"
                     r"please|show me|give me|recommend|i want|i'd like|i would like|what about|how about)\b")


@dataclass
class Constraints:
    """Standing requests, kept across turns until replaced or the visitor starts over."""

    years: tuple[int, int] | None = None
    genres: tuple[str, ...] = ()
    mood: str | None = None  # "darker" | "lighter"

    def describe(self) -> str:
        parts = []
        if self.mood:
            parts.append(self.mood)
        if self.genres:
            parts.append(" / ".join(self.genres))
        if self.years:
            low, high = self.years
            if low <= 1000:
                parts.append(f"before {high + 1}")
            elif high >= 9999:
                parts.append(f"from {low} on")
            elif high - low == 9 and low % 10 == 0:
                parts.append(f"from the {low}s")
            else:
                parts.append(f"from {low}" if low == high else f"from {low}-{high}")
        return ", ".join(parts)


@dataclass
class Question:
    """A title named uncertainly, waiting for the visitor's answer: nothing is added before it.

    written: the words as the visitor wrote them; choices: item ids, best first; action: what the answer
    does with the chosen film: "like" (joins the history, liked), "seen", "dislike" or "more_like".
    """

    written: str
    choices: list[str]
    action: str = "like"


@dataclass
class ConversationState:
    """One session's memory. history: items the visitor has seen or liked, oldest first."""

    history: list[str] = field(default_factory=list)
    liked: list[str] = field(default_factory=list)
    disliked: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)  # everything recommended so far, in order
    last: list[str] = field(default_factory=list)  # the latest recommendations, in rank order
    turns: int = 0
    constraints: Constraints = field(default_factory=Constraints)
    persona: str | None = None
    pending: list[Question] = field(default_factory=list)  # questions to ask, the first one asked

    def reset(self) -> None:
        fresh = ConversationState()
        self.__dict__.update(fresh.__dict__)

    def add_history(self, item_ids: list[str]) -> list[str]:
        """Append items not already there (and no longer disliked); returns those added."""
        added = [i for i in dict.fromkeys(item_ids) if i not in self.history]
        self.history.extend(added)
        self.disliked = [i for i in self.disliked if i not in added]
        return added

    def like(self, item_id: str) -> None:
        self.add_history([item_id])
        if item_id not in self.liked:
            self.liked.append(item_id)

    def dislike(self, item_id: str) -> None:
        if item_id not in self.disliked:
            self.disliked.append(item_id)
        self.history = [i for i in self.history if i != item_id]
        self.liked = [i for i in self.liked if i != item_id]


@dataclass
class Request:
    """One message, parsed. Ordinals index the latest recommendations (0 = first, -1 = last)."""

    text: str
    titles: list[str] = field(default_factory=list)  # item ids named surely in the message
    unsure: list[Mention] = field(default_factory=list)  # titles named uncertainly: to ask about, not to add
    start_over: bool = False
    why: bool = False
    seen: bool = False
    reject: bool = False
    more_like: bool = False
    again: bool = False
    ordinal: int | None = None
    mood: str | None = None
    years: tuple[int, int] | None = None
    clear_years: bool = False
    genres: tuple[str, ...] = ()

    asks: bool = False  # a plain request for picks ("recommend", "more please")
    naming: bool = False  # announces a title ("I loved ..."), found or not

    @property
    def is_follow_up(self) -> bool:
        return any([self.why, self.seen, self.reject, self.more_like, self.again, self.mood, self.years,
                    self.genres, self.clear_years, self.ordinal is not None])

    @property
    def understood(self) -> bool:
        """Whether anything in the message was recognised: a title, a follow-up, a reset or a plain ask."""
        return bool(self.titles or self.unsure) or self.is_follow_up or self.start_over or self.asks

    @property
    def action(self) -> str:
        """What the message does with the titles it names (see `Question.action`)."""
        return "dislike" if self.reject else "seen" if self.seen else "more_like" if self.more_like else "like"


def clean_message(message: str) -> str:
    """`message` as the app reads, logs and shows it: control characters become spaces, lone surrogates
    (which no UTF-8 encoder accepts) and bidirectional overrides are dropped, whitespace is collapsed.
    Letters, marks and symbols of every script, emoji sequences included, are kept."""
    return " ".join(_CONTROL_CHARS.sub(" ", _DROPPED.sub("", message)).split())


def parse(message: str, catalog: Catalog) -> Request:
    """Parse one visitor message (see the module docstring for what is understood)."""
    text = clean_message(message)
    low = text.lower()
    request = Request(text=text)
    request.asks = bool(_ASK.search(low))
    request.naming = bool(_NAMING.search(low))
    request.start_over = bool(_START_OVER.search(low))
    request.why = bool(_WHY.search(low))
    request.seen = bool(_SEEN.search(low))
    request.more_like = bool(_MORE_LIKE.search(low))
    request.reject = bool(_REJECT.search(low)) and not request.more_like
    request.again = bool(_AGAIN.search(low)) and not request.start_over
    if _DARKER.search(low):
        request.mood = "darker"
    elif _LIGHTER.search(low):
        request.mood = "lighter"
    request.genres = tuple(dict.fromkeys(GENRE_WORDS[m] for m in _GENRE.findall(low)))
    request.years, request.clear_years = _years(low)
    if match := _ORDINAL.search(low):
        request.ordinal = ORDINALS[match[1]] if match[1] else int(match[2]) - 1

    # Words of control phrases, requests and fillers name a film only when written as a title.
    weak = [m.span() for pattern in (*_CONTROL, _FILLER, _ASK, _NAMING) for m in pattern.finditer(low)]
    found = catalog.find_titles(text, weak)
    request.titles = [m.item_id for m in found if m.confident]
    request.unsure = [m for m in found if not m.confident]
    return request


def read_answer(request: Request, question: Question, catalog: Catalog) -> int | None:
    """The visitor's reply to `question`: the index of the chosen film among its choices, `NEITHER`, or None
    when the message is not an answer (the visitor moved on: the question is dropped, nothing added).

    Understood: "the first", "2", "#2", "the last one", a title among the choices (as written, misspelt or
    not), "the 1977 one", "neither", "no"; "yes" when there was one choice."""
    text = " ".join(re.sub(r"[^\w#' ]+", " ", request.text.lower()).split())
    choices = question.choices
    if _NEITHER.fullmatch(text):
        return NEITHER
    if _YES.fullmatch(text) and len(choices) == 1:
        return 0
    if match := _PICK.fullmatch(text):
        index = ORDINALS[match[1]] if match[1] else int(match[2]) - 1
        index = index if index >= 0 else len(choices) + index
        return index if 0 <= index < len(choices) else None
    if match := _THE_YEAR.fullmatch(text):
        same = [i for i, item_id in enumerate(choices) if catalog.item(item_id).year == int(match[1])]
        return same[0] if len(same) == 1 else None
    for item_id in request.titles + [m.item_id for m in request.unsure]:
        if item_id in choices:
            return choices.index(item_id)
    return None


def _years(low: str) -> tuple[tuple[int, int] | None, bool]:
    if _ANY_TIME.search(low):
        return None, True
    if match := _DECADE.search(low):
        century, digit, short = match.groups()
        digit = digit or short
        century = century or ("20" if digit in "012" and not match[0].startswith("the 1") else "19")
        start = int(century) * 100 + int(digit) * 10
        return (start, start + 9), False
    if match := _BEFORE.search(low):
        return (0, int(match[1]) - 1), False
    if match := _AFTER.search(low):
        return (int(match[1]), 9999), False
    if match := _YEAR.search(low):
        return (int(match[1]), int(match[1])), False
    return None, False
