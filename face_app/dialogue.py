"""What a visitor says, parsed: the conversation state and the follow-up parser (pure Python, no model).

`ConversationState` is one browser session's memory, the question it is waiting on included.
`parse(message, catalog)` turns a message into a `Request`: the titles it names surely and the ones it names
uncertainly (typo-tolerant, through `Catalog.find_titles`), and the follow-ups
the engine understands: "more like the second one", "something darker/lighter", "seen it", "not that",
"why that one?", "show them again", "start over"; periods ("from the 90s", "the 60s or 70s", "before 1970",
"after 1990", "from 1985 to 1995", and "older" / "recent", which the engine measures against the history and
the catalog); genres wanted or left out ("comedies", "no musicals", "anything but horror"); a number of picks
("show me 10", "just 3"); "the films I listed". Words of control
phrases name a film only in title case, so "something darker" or "a war movie" never names one.
`read_answer(request, question)` reads a reply to "Did you mean A or B?": "the first", "2", a title,
"the 1977 one", "neither".
`clean_message` is what every message goes through first: control characters, lone surrogates and
bidirectional overrides out, whitespace collapsed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
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
    "science fiction": "Sci-Fi", "science-fiction": "Sci-Fi", "thriller": "Thriller", "thrillers": "Thriller",
    "war": "War", "western": "Western", "westerns": "Western", "horrors": "Horror", "romances": "Romance",
    "romcoms": "Romance", "fantasies": "Fantasy", "film noir": "Film-Noir", "noirs": "Film-Noir",
    "crime films": "Crime", "war films": "War", "war movies": "War", "sci-fi films": "Sci-Fi",
}
_GENRE_ALTERNATIVES = "|".join(sorted(map(re.escape, GENRE_WORDS), key=len, reverse=True))
_GENRE = re.compile(r"\b(" + _GENRE_ALTERNATIVES + r")\b")
# A genre (or a list of them: "no horror or musicals") after a negation is left out, never asked for.
_NO_GENRE = re.compile(
    r"\b(?:no(?:\s+more)?|not(?:\s+a)?|non|never|without|except(?:\s+for)?|but(?:\s+no)?|excluding|nothing|minus"
    r"|(?:do\s+not|don'?t)\s+(?:like|want|need)|hate|dislike|not\s+a\s+fan\s+of)\s+(?:any\s+|an?\s+)?"
    r"((?:" + _GENRE_ALTERNATIVES + r")(?:\s*(?:,|or|and|nor)\s*(?:an?\s+)?(?:" + _GENRE_ALTERNATIVES + r"))*)\b")
# Mood shifts map onto genres, which is what the catalog knows about tone.
DARK_GENRES = frozenset({"Horror", "Thriller", "Crime", "Film-Noir", "War", "Mystery"})
LIGHT_GENRES = frozenset({"Comedy", "Children's", "Animation", "Musical", "Romance", "Family"})
_DARKER = re.compile(r"\b(darker|dark|grimmer|grim|bleak|scarier|scary|creepier|more serious|edgier|intense)\b")
_LIGHTER = re.compile(r"\b(lighter|light|funnier|funny|happier|happy|cheerful|feel[- ]good|upbeat|fun)\b")
# Moods and occasions as people say them -> what the catalog can filter or weigh: the genres asked for (a pick has
# one of them) and the mood (`picking.mood`). One table, read in order; a phrase after a negation ("nothing scary",
# "not for kids") leaves its genres out instead, or turns its mood ("not too dark" -> lighter). The reply says how
# each phrase was read.
MOODS: list[tuple[str, tuple[str, ...], str | None]] = [
    (r"light[- ]hearted|light and funny|funny|hilarious|make me laugh|a laugh|comic|laughs?", ("Comedy",), "lighter"),
    (r"feel[- ]good|heart[- ]?warming|uplifting|cheer me up", ("Comedy",), "lighter"),
    (r"scary|spooky|terrifying|frightening|creepy|halloween|scare me", ("Horror",), "darker"),
    (r"romantic|love stor(?:y|ies)|date night", ("Romance",), None),
    (r"for (?:my|the) (?:kids|children|little ones)|with (?:my|the) (?:kids|children)|family[- ]night"
     r"|family[- ]friendly|kid[- ]friendly|for kids", ("Children's",), "lighter"),
    (r"epic|sweeping", ("Adventure", "War"), None),
    (r"mind[- ]bending|trippy|makes? me think|twisty|cerebral", ("Sci-Fi", "Mystery"), None),
    (r"tear[- ]?jerker|a good cry|make me cry|weepie", ("Drama", "Romance"), None),
    (r"suspenseful|edge of my seat|nail[- ]biter|gripping", ("Thriller",), None),
]
_MOODS = [(re.compile(r"\b(?:" + phrase + r")\b"), genres, mood) for phrase, genres, mood in MOODS]
_MOOD_NEGATION = re.compile(r"\b(?:no|not|nothing|never|without|anything but|don'?t want(?: anything)?|not too|"
                            r"nothing too|too)\s+(?:\w+\s+){0,2}$")
# How a clause feels about the titles in it. A verb ("loved", "hated") looks forward to the title it names; a
# predicate ("was boring", "is a masterpiece") looks back at the title before it. Negative cues are read first
# ("didn't like" holds "like").
_NEGATIVE_VERB = re.compile(r"\b(hat(?:e|ed|es)|dislik(?:e|ed|es)|(?:did ?n[o']?t|do ?n[o']?t|does ?n[o']?t) "
                            r"(?:like|enjoy|love|care for|get into)|can'?t stand|couldn'?t stand|couldn'?t get into|"
                            r"not (?:a (?:big )?fan of|into|keen on)|loath(?:e|ed|es)|detest(?:ed|s)?|despis(?:e|ed)"
                            r"|never (?:watch(?:ing)?|see(?:ing)?)|(?:i'?d|would) never watch)\b")
_POSITIVE_VERB = re.compile(r"\b(lov(?:e|ed|es)|lik(?:e|ed|es)|enjoy(?:ed|s)?|ador(?:e|ed|es)|(?:big )?fan of|"
                            r"favou?rites? (?:are|is|were|was)|rewatch(?:ed)?|really liked|obsessed with)\b")
_NEGATIVE_PREDICATE = re.compile(
    r"\b(boring|bored me|dull|awful|terrible|bad|worst|overrated|rubbish|meh|stupid|annoy(?:ing|ed me)|sucks?|"
    r"put me to sleep|not (?:for me|so much|my thing|great|good)|was ?n[o']?t|is ?n[o']?t|too violent|no|"
    r"a waste|disappointing|hated it|disliked it|dreadful|horrible|let ?down|too (?:grim|slow|long|dark|much)|"
    r"not (?:very )?good|mediocre|forgettable)\b")
_POSITIVE_PREDICATE = re.compile(
    r"\b(great|brilliant|amazing|fantastic|awesome|wonderful|excellent|masterpiece|incredible|lovely|sweet|fun|"
    r"good|rocks|moved me|yes|perfect|superb|beautiful|a classic|a favou?rite|one of my favou?rites|loved it|"
    r"liked it|enjoyed it|faves?|a gem)\b")
# Where a message's clauses part: punctuation, and the words that set one clause against another.
_CLAUSE_BREAK = re.compile(r"[.;!?,]+|\b(?:but|although|whereas|while|however|yet)\b")
_CONTRAST = re.compile(r"\b(?:but|though|although|whereas|while|however|yet|on the other hand|instead)\b")
# Words that make a mood or genre in a clause about a title a request ("Groundhog Day was great and I want another
# feel-good film") rather than a feeling ("Men in Black was fun").
_REQUEST_FRAME = re.compile(r"\b(?:something|anything|another|more|some|want|wanted|mood for|give me|looking for|"
                            r"instead|else|next|please)\b")
_DECADE_FORM = r"(?:(19|20)?(\d)0'?s|'(\d)0s)"
_DECADE = re.compile(r"(?<![\w'])(?:the\s+)?" + _DECADE_FORM + r"\b")
_YEAR_OR_DECADE = r"(?:the\s+)?(?:(?:19|20)?\d0'?s|'\d0s|(?:18|19|20)\d\d)"
# "from 1985 to 1995", "between 1985 and 1995", "1985-1995", "from the 60s to the 80s"
_SPAN = re.compile(r"\bbetween\s+(" + _YEAR_OR_DECADE + r")\s+and\s+(" + _YEAR_OR_DECADE + r")(?!\w)"
                   r"|\b(?:from\s+)?(" + _YEAR_OR_DECADE + r")\s*(?:to|through|till|until|-|–)\s*("
                   + _YEAR_OR_DECADE + r")(?!\w)")
_BEFORE = re.compile(r"\b(?:before|older than|pre|earlier than|up to)[- ](" + _YEAR_OR_DECADE + r")(?!\w)")
_AFTER = re.compile(r"\b(after|since|newer than|post|later than)[- ](" + _YEAR_OR_DECADE + r")(?!\w)")
_YEAR = re.compile(r"\b(?:from|in|of)\s+((?:19|20)\d\d)\b")
# Periods relative to the visitor's history or to the catalog's own newest year (the engine resolves them).
_OLDER = re.compile(r"\b(older|old(?:er)? (?:films?|movies?|ones?)|classics?|classic (?:films?|movies?)|vintage)\b")
_RECENT = re.compile(r"\b(recent(?:ly)?|newer|newest|latest|new (?:films?|movies?|ones?|releases?))\b")
# How many picks this turn: "show me 10", "just 3", "give me twenty", "top 5", "5 more", "three films".
NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
    "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "a hundred": 100,
    "a dozen": 12, "a couple": 2, "a couple of": 2,
}
_NUMBER = r"(\d{1,3}|" + "|".join(sorted(map(re.escape, NUMBER_WORDS), key=len, reverse=True)) + r")"
_COUNT = re.compile(r"\b(?:(?:show|give|get|find|recommend|suggest|list|send)\s+(?:me|us)\s+|just\s+|only\s+|top\s+)"
                    + _NUMBER + r"(?!\w|\s*(?:st|nd|rd|th)\b)"
                    r"|\b" + _NUMBER + r"\s+(?:more\s+)?(?:picks?|movies?|films?|recommendations?|suggestions?|titles?"
                    r"|options?|ones|more)\b")
# "the films I listed": an ordinal then counts over the visitor's own named films, not the picks.
_OF_LISTED = re.compile(r"\b(?:films?|movies?|ones?|titles?)\s+(?:that\s+)?i\s+(?:just\s+)?(?:listed|named|mentioned"
                        r"|gave|said|wrote|typed)\b|\bof mine\b|\bmy (?:list|films|movies)\b")
_ANY_TIME = re.compile(r"\b(any (?:year|decade|time|era)|whenever)\b")
_START_OVER = re.compile(r"\b(start over|start again|restart|reset|forget (?:it|everything|all that)|new start)\b")
_WHY = re.compile(r"\bwhy\b")
_SEEN = re.compile(r"\b(seen (?:it|that|this|them|those)|already (?:seen|watched)|(?:i'?ve|i have) (?:seen|watched)"
                   r"|watched (?:it|that|this)|seen the)\b")
_REJECT = re.compile(r"\b(not (?:that|this|it|those|the)|no(?:t)? thanks|don'?t (?:like|want)|didn'?t like|hate[ds]?"
                     r"|dislike[ds]?|skip|nope|not for me|not interested)\b")
_MORE_LIKE = re.compile(r"\b(more like|similar to|something like|like the|in the vein of|along the lines of)\b")
_AGAIN = re.compile(r"\b(again|show (?:them|those|me those) (?:again|once more)|repeat)\b")
_CONTROL = [_START_OVER, _WHY, _SEEN, _REJECT, _MORE_LIKE, _AGAIN, _DARKER, _LIGHTER, _DECADE, _SPAN, _BEFORE, _AFTER,
            _YEAR, _ANY_TIME, _NO_GENRE, _GENRE, _ORDINAL, _OLDER, _RECENT, _COUNT, _OF_LISTED]
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
# Common English words: a message with none of them (or with no Latin letter at all) is likely in another
# language, and its reply says that the chat reads English.
ENGLISH_WORDS = frozenset("""
a about after again all also am an and any anything are as at be been before best but by can could did do does
don't film films for from give good great have hello hey hi how i i'd i'm i've if in is it it's just like liked
love loved me more movie movies my need no not nothing of ok okay on one only or please print recommend see seen
show so some something tell thank thanks that the them there these they this those to too try very want was
watch watched we what when where which who why will with without would yes you your
""".split())
_FILLER = re.compile(r"\b(that one|this one|that|this|one|ones|it|something|anything|movie|movies|film|films|"
                     r"please|show me|give me|recommend|i want|i'd like|i would like|what about|how about)\b")


@dataclass
class Constraints:
    """Standing requests, kept across turns until replaced or the visitor starts over.

    years: year ranges (inclusive), any of which a pick may fall in; genres: a pick has one of them;
    no_genres: a pick has none of them."""

    years: tuple[tuple[int, int], ...] = ()
    genres: tuple[str, ...] = ()
    no_genres: tuple[str, ...] = ()
    mood: str | None = None  # "darker" | "lighter"

    def describe(self) -> str:
        parts = []
        if self.mood:
            parts.append(self.mood)
        if self.genres:
            parts.append(" / ".join(self.genres))
        if self.no_genres:
            parts.append("no " + ", ".join(self.no_genres))
        if self.years:
            parts.append(describe_years(self.years))
        return ", ".join(parts)

    def admits(self, year: int | None, genres: Sequence[str]) -> bool:
        """Whether a film of `year` and `genres` meets the years and genres asked (the mood is a preference)."""
        if self.years and (year is None or not any(low <= year <= high for low, high in self.years)):
            return False
        if self.genres and not set(self.genres) & set(genres):
            return False
        return not set(self.no_genres) & set(genres)


OPEN_START, OPEN_END = 0, 9999  # the bounds of "before 1970" and "after 1990"


def describe_years(ranges: Sequence[tuple[int, int]]) -> str:
    """"from the 1960s or 1970s", "before 1970", "from 1991 on", "from 1985 to 1995", "from 1977"."""
    if all(high - low == 9 and low % 10 == 0 for low, high in ranges):
        return "from the " + " or ".join(f"{low}s" for low, _ in ranges)
    pieces = []
    for low, high in ranges:
        if low <= OPEN_START:
            pieces.append(f"before {high + 1}")
        elif high >= OPEN_END:
            pieces.append(f"from {low} on")
        elif high - low == 9 and low % 10 == 0:
            pieces.append(f"from the {low}s")
        else:
            pieces.append(f"from {low}" if low == high else f"from {low} to {high}")
    return " or ".join(pieces)


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
    # The films the visitor named in their latest message that named any, in the order named; "the second one"
    # means the second of them while `refers_to_listed` (that turn showed no picks), else the second pick.
    listed: list[str] = field(default_factory=list)
    refers_to_listed: bool = False

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
    ordinal_text: str = ""  # the words that gave the ordinal ("the second one")
    of_listed: bool = False  # "the films I listed": the ordinal counts over the visitor's own named films
    mood: str | None = None
    years: tuple[tuple[int, int], ...] = ()  # year ranges, any of which will do
    era: str | None = None  # "older" | "recent": relative to the history or the catalog (the engine resolves it)
    clear_years: bool = False
    genres: tuple[str, ...] = ()
    no_genres: tuple[str, ...] = ()  # genres left out ("no musicals", "anything but horror")
    count: int | None = None  # how many picks this turn, as asked (the engine bounds it)

    feelings: dict[str, str] = field(default_factory=dict)  # item id -> "like" | "dislike" | "seen", per title
    readings: list[str] = field(default_factory=list)  # how mood and occasion phrases were read, for the reply
    asks: bool = False  # a plain request for picks ("recommend", "more please")
    english: bool = True  # has a word of English (see `reads_english`)
    naming: bool = False  # announces a title ("I loved ..."), found or not

    @property
    def is_follow_up(self) -> bool:
        return any([self.why, self.seen, self.reject, self.more_like, self.again, self.mood, self.years, self.era,
                    self.genres, self.no_genres, self.clear_years, self.ordinal is not None])

    @property
    def understood(self) -> bool:
        """Whether anything in the message was recognised: a title, a follow-up, a reset or a plain ask."""
        return (bool(self.titles or self.unsure) or self.is_follow_up or self.start_over or self.asks
                or self.count is not None)

    @property
    def action(self) -> str:
        """What the message does with the titles it names (see `Question.action`)."""
        return "dislike" if self.reject else "seen" if self.seen else "more_like" if self.more_like else "like"


def clean_message(message: str) -> str:
    """`message` as the app reads, logs and shows it: control characters become spaces, lone surrogates
    (which no UTF-8 encoder accepts) and bidirectional overrides are dropped, whitespace is collapsed.
    Letters, marks and symbols of every script, emoji sequences included, are kept."""
    return " ".join(_CONTROL_CHARS.sub(" ", _DROPPED.sub("", message)).split())


def reads_english(low: str) -> bool:
    """Whether a lower-cased message has a Latin letter and a common English word (`ENGLISH_WORDS`)."""
    return any(word in ENGLISH_WORDS for word in re.findall(r"[a-z]+(?:'[a-z]+)?", low))


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
    negated = [m.span() for m in _NO_GENRE.finditer(low)]
    # "I don't like horror" leaves out a genre; it rejects no film.
    request.reject = any(not _inside(m.span(), negated) for m in _REJECT.finditer(low)) and not request.more_like
    request.again = bool(_AGAIN.search(low)) and not request.start_over
    found = catalog.find_titles(text, _weak_spans(low))
    clauses = _clauses(low, found)
    titled = [(a, b) for a, b in clauses if any(a <= _middle(m) < b for m in found)]

    def asked(span: tuple[int, int]) -> bool:
        """A mood or genre word asks for something unless it sits in a clause about a title with no request
        word before it ("Men in Black was fun" is a feeling, "… and I want another feel-good film" a request)."""
        clause = next(((a, b) for a, b in titled if a <= span[0] < b), None)
        return clause is None or bool(_REQUEST_FRAME.search(low, clause[0], span[0]))

    moods = _read_moods(low, asked)

    def plain(pattern: re.Pattern, negated_too: bool) -> list[re.Match]:
        """The plain mood words ("dark", "light") outside the table's phrases, negated or not."""
        return [m for m in pattern.finditer(low) if asked(m.span()) and not _inside(m.span(), moods.spans)
                and _negated(low, m.start()) == negated_too]

    dark, light, turned = plain(_DARKER, False), plain(_LIGHTER, False), plain(_DARKER, True)
    request.mood = moods.mood or ("darker" if dark else "lighter" if light or turned else None)
    no_genres = [GENRE_WORDS[g] for m in _NO_GENRE.finditer(low) for g in _GENRE.findall(m[1])]
    request.no_genres = tuple(dict.fromkeys([*no_genres, *moods.no_genres]))
    wanted = [GENRE_WORDS[m[1]] for m in _GENRE.finditer(low) if not _inside(m.span(), negated) and asked(m.span())]
    request.genres = tuple(g for g in dict.fromkeys([*wanted, *moods.genres]) if g not in request.no_genres)
    request.readings = moods.readings
    request.years, request.clear_years = _years(low)
    if not request.years and not request.clear_years:
        request.era = "older" if _OLDER.search(low) else "recent" if _RECENT.search(low) else None
    counted = _count(low)
    if counted:
        number = counted[1] or counted[2]
        request.count = int(number) if number.isdigit() else NUMBER_WORDS[number]
    request.of_listed = bool(_OF_LISTED.search(low))
    for match in _ORDINAL.finditer(low):
        if not (counted and match.start() < counted.end() and counted.start() < match.end()):  # "top 5": a count
            request.ordinal = ORDINALS[match[1]] if match[1] else int(match[2]) - 1
            request.ordinal_text = text[match.start():match.end()]
            break
    request.english = reads_english(low)

    request.titles = [m.item_id for m in found if m.confident]
    request.unsure = [m for m in found if not m.confident]
    request.feelings = feelings(low, [m for m in found if m.confident], clauses, request.action)
    return request


def _weak_spans(low: str) -> list[tuple[int, int]]:
    """Words of control phrases, requests, moods and fillers: they name a film only when written as a title."""
    patterns = (*_CONTROL, _FILLER, _ASK, _NAMING, _NEGATIVE_VERB, _POSITIVE_VERB, _NEGATIVE_PREDICATE,
                _POSITIVE_PREDICATE, *(pattern for pattern, _, _ in _MOODS))
    return [m.span() for pattern in patterns for m in pattern.finditer(low)]


def _clauses(low: str, titles: Sequence[Mention] = ()) -> list[tuple[int, int]]:
    """The message's clauses as character spans, parted at punctuation and at contrast words (never inside a
    title the message names: "L.A. Confidential", "Mission: Impossible")."""
    spans, start = [], 0
    for match in _CLAUSE_BREAK.finditer(low):
        if any(m.start <= match.start() < m.end for m in titles) and _inside_title(low, match):
            continue
        spans.append((start, match.start()))
        start = match.start() if match[0][0].isalpha() else match.end()  # a contrast word opens the next clause
    spans.append((start, len(low)))
    return [(a, b) for a, b in spans if low[a:b].strip()]


def _inside_title(low: str, match: re.Match) -> bool:
    """A break that belongs to a title's own words: the dot of an initial ("L.A.") or a title's colon."""
    return match[0] == ":" or (match[0] == "." and bool(re.search(r"(?:^|[^\w])\w$", low[:match.start()])))


def _middle(mention: Mention) -> float:
    """Where a mention sits, for the clause it belongs to (a matched run may take a word of the clause before)."""
    return (mention.start + mention.end) / 2


def _negated(low: str, start: int) -> bool:
    """Whether the words just before `start` negate what follows ("nothing scary", "not too dark")."""
    return bool(_MOOD_NEGATION.search(low[max(0, start - 40):start]))


@dataclass
class MoodReading:
    """What the `MOODS` table read in a message: genres asked for and left out, the mood, how each phrase was read
    (for the reply), and where the phrases are (`spans`: the plain mood words inside them are theirs)."""

    genres: list[str] = field(default_factory=list)
    no_genres: list[str] = field(default_factory=list)
    mood: str | None = None
    readings: list[str] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)


def _read_moods(low: str, asked: Callable[[tuple[int, int]], bool]) -> MoodReading:
    """The `MOODS` table over a message: what each phrase asks for (or, negated, leaves out), and how it was
    read; a phrase overlapping one read before is skipped."""
    out = MoodReading()
    for pattern, genres, mood in _MOODS:
        for match in pattern.finditer(low):
            if any(a < match.end() and match.start() < b for a, b in out.spans) or not asked(match.span()):
                continue
            out.spans.append(match.span())
            if _negated(low, match.start()):
                out.no_genres += [g for g in genres if g not in out.no_genres]
                out.readings.append(f"‘{match[0]}’ left out as " + ", ".join(f"no {g}" for g in genres))
            else:
                out.genres += [g for g in genres if g not in out.genres]
                out.mood = out.mood or mood
                read = " or ".join(genres) + (f", {mood}" if mood else "")
                out.readings.append(f"‘{match[0]}’ as {read}")
    return out


def _leads(pattern: re.Pattern, low: str, start: int, mention: Mention) -> bool:
    """Whether a cue starts between `start` and the title (it may run into the title's first words: the matched run
    of "big fan of Raiders of the Lost Ark" can begin at "of")."""
    return any(m.start() < mention.start for m in pattern.finditer(low, start, mention.end))


def _clause_feeling(low: str, start: int, end: int) -> str | None:
    """The feeling a stretch of a clause carries, negative cues first: dislike, like, seen or None."""
    piece = low[start:end]
    if _NEGATIVE_VERB.search(piece) or _NEGATIVE_PREDICATE.search(piece):
        return "dislike"
    if _POSITIVE_VERB.search(piece) or _POSITIVE_PREDICATE.search(piece):
        return "like"
    if _SEEN.search(piece):
        return "seen"
    return None


def feelings(low: str, mentions: Sequence[Mention], clauses: list[tuple[int, int]], default: str) -> dict[str, str]:
    """Each title's own feeling, from its own clause ("hated X but loved Y", "X was boring, Y was great").

    Within a clause, a title takes the verb before it ("loved X and hated Y") or else the predicate after it ("X
    was bad and Y was good"); a title of a clause with no feeling takes the feeling of the next clause when that one
    names no title ("Titanic, not for me"), else that of the clause before it, reversed after a contrast word
    ("not a fan of X; Y though"). A message with no feeling word at all gives every title `default` (the message's
    action: "I've seen X", or a title alone, which is liked)."""
    out: dict[str, str] = {}
    last: str | None = None
    pending: list[str] = []
    for a, b in clauses:
        inside = [m for m in mentions if a <= _middle(m) < b]
        if not inside:
            feeling = _clause_feeling(low, a, b)
            if feeling and pending:
                out.update({item_id: feeling for item_id in pending})
                pending = []
            last = feeling or last
            continue
        if pending:  # the clause before named titles and no feeling: they share the one before that (or are liked)
            out.update({item_id: last or "like" for item_id in pending})
            pending = []
        clause_feeling = None
        for index, mention in enumerate(inside):
            before = inside[index - 1].end if index else a
            after = inside[index + 1].start if index + 1 < len(inside) else b
            verb = (_leads(_NEGATIVE_VERB, low, before, mention) and "dislike") or (
                _leads(_POSITIVE_VERB, low, before, mention) and "like") or (
                _leads(_SEEN, low, before, mention) and "seen")
            predicate = (_NEGATIVE_PREDICATE.search(low, mention.end, after) and "dislike") or (
                _POSITIVE_PREDICATE.search(low, mention.end, after) and "like")
            if not verb and not predicate and index + 1 == len(inside):
                predicate = _clause_feeling(low, mention.end, b)
            feeling = verb or predicate or clause_feeling
            if feeling is None:
                if index + 1 < len(inside):  # "Scream and Psycho were both terrible": the next one's
                    later = _clause_feeling(low, mention.end, b)
                    feeling = later if later and not _POSITIVE_VERB.search(low, mention.end, after) \
                        and not _NEGATIVE_VERB.search(low, mention.end, after) else None
            if feeling is None:
                pending.append(mention.item_id)
                continue
            for item_id in pending:
                out[item_id] = feeling
            pending = []
            out[mention.item_id] = feeling
            clause_feeling = feeling
        if pending and _CONTRAST.search(low, a, b) and last in ("like", "dislike"):
            out.update({item_id: "like" if last == "dislike" else "dislike" for item_id in pending})
            pending = []
        last = clause_feeling or last
    out.update({item_id: last or default for item_id in pending})
    return {m.item_id: out.get(m.item_id, default) for m in mentions}


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


def _inside(span: tuple[int, int], spans: Sequence[tuple[int, int]]) -> bool:
    return any(a <= span[0] and span[1] <= b for a, b in spans)


def _period(words: str) -> tuple[int, int]:
    """"1985" -> (1985, 1985); "the 1960s", "60s", "'70s" -> the decade's years."""
    words = words.removeprefix("the").strip()
    if re.fullmatch(r"\d{4}", words):
        return int(words), int(words)
    match = re.fullmatch(_DECADE_FORM, words)
    assert match is not None, words
    century, digit, short = match.groups()
    digit = digit or short
    century = century or ("20" if digit in "012" else "19")
    start = int(century) * 100 + int(digit) * 10
    return start, start + 9


def _years(low: str) -> tuple[tuple[tuple[int, int], ...], bool]:
    """The year ranges a message asks for (any of them will do), and whether it asks for any year at all.

    "the 60s or 70s" and "the 1960s and 70s" -> both decades; "from 1985 to 1995", "between the 60s and the
    80s" -> one span; "before 1970" -> up to 1969; "after 1990" -> from 1991; "since 1990" -> from 1990;
    "from 1977" -> that year."""
    if _ANY_TIME.search(low):
        return (), True
    ranges: list[tuple[int, int]] = []
    taken: list[tuple[int, int]] = []

    def free(match: re.Match) -> bool:
        return not any(a < match.end() and match.start() < b for a, b in taken)

    for match in _SPAN.finditer(low):
        first, last = (match[1], match[2]) if match[1] else (match[3], match[4])
        low_year, high_year = _period(first)[0], _period(last)[1]
        if low_year <= high_year:
            ranges.append((low_year, high_year))
            taken.append(match.span())
    for match in _BEFORE.finditer(low):
        if free(match):
            ranges.append((OPEN_START, _period(match[1])[0] - 1))
            taken.append(match.span())
    for match in _AFTER.finditer(low):
        if free(match):
            first, last = _period(match[2])
            ranges.append((first if match[1] == "since" else last + 1, OPEN_END))
            taken.append(match.span())
    for pattern in (_DECADE, _YEAR):
        for match in pattern.finditer(low):
            if free(match):
                ranges.append(_period(match[0] if pattern is _DECADE else match[1]))
                taken.append(match.span())
    return tuple(sorted(set(ranges))), False


def _count(low: str) -> re.Match | None:
    """Where a message asks for a number of picks ("show me 10", "just 3", "give me twenty"), if it does."""
    for match in _COUNT.finditer(low):
        if not (match[0].startswith("top") and (match[1] or match[2]) == "one"):  # "the top one" is an ordinal
            return match
    return None
