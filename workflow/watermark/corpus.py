"""Seeded news-like English documents and C4 ``realnewslike``-style JSONL records.

The demo has no download, so its LM learns a generated language, and two needs pull apart:

* A green-list watermark can only tilt a choice that exists: where the next token is
  predictable there is nothing to bias. So most words fill open slots (people, places,
  organisations, roles, verbs, nouns, adjectives, numbers, dates), drawn uniformly from lists
  of mostly 30-70 words of one token each; fixed function words are few, and since they sit between
  random slot words, no bigram repeats often enough to inflate the z-score of plain text.
* A 2-layer model must learn the language in about a minute of CPU. So sentences are short
  chains of phrase types (subject, verb, object, place, time) from ten sentence patterns: the
  type of the next word follows from the last few words, and the words themselves only need
  their list's (uniform) frequencies.

Each document keeps a cast (a lead person, an organisation, a home city) that its sentences
return to, so context matters too. Document ``i`` of ``documents(n, seed)`` depends only on
``(seed, i)``: a longer list begins with the shorter one.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: A document grows by sentences until it reaches a length drawn from this range (characters;
#: 330-500 tokens of the demo's tokenizer, so that a >= 50-token prompt and its 200-token
#: completion fit the LM's 512 positions).
LENGTH = (1650, 2150)
#: Sentences per paragraph.
SENTENCES = (3, 7)

FIRST = (
    "James", "Mary", "Robert", "Linda", "John", "Susan", "Michael", "Karen", "David", "Nancy",
    "William", "Lisa", "Richard", "Betty", "Joseph", "Sarah", "Thomas", "Emily", "Charles",
    "Laura", "Daniel", "Helen", "Paul", "Anna", "Mark", "Amy", "George", "Rose", "Kevin", "Ruth",
    "Brian", "Grace", "Eric", "Alice", "Peter", "Julia", "Frank", "Diane", "Henry", "Carol",
)  # fmt: skip
LAST = (
    "Smith", "Johnson", "Brown", "Jones", "Miller", "Davis", "Wilson", "Moore", "Taylor",
    "Thomas", "Jackson", "White", "Harris", "Martin", "Clark", "Lewis", "Lee", "Walker", "Hall",
    "Allen", "Young", "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Hill",
    "Campbell", "Carter", "Evans", "Turner", "Parker", "Collins", "Stewart", "Morris", "Cook",
    "Rogers", "Reed", "Bell", "Ward", "Cox", "Gray", "Wood", "Price", "Bennett", "Ross",
)  # fmt: skip
CITY = (
    "Springfield", "Riverside", "Lakewood", "Fairview", "Milford", "Ashland", "Salem",
    "Madison", "Franklin", "Bristol", "Dover", "Oxford", "Newport", "Kingston", "Burlington",
    "Manchester", "Arlington", "Hudson", "Chester", "Marion", "Oakland", "Portland", "Columbia",
    "Lexington", "Bedford", "Dayton", "Camden", "Auburn", "Florence", "Monroe", "Princeton",
    "Richmond", "Troy", "Warren", "York", "Glendale", "Hampton", "Kent", "Lancaster", "Norwood",
)  # fmt: skip
CIVIC = (
    "City Council", "School Board", "Health Department", "Transit Authority", "Water District",
    "Public Library", "Police Department", "University", "Museum", "Port Authority",
    "Housing Agency", "Parks Department", "Planning Board", "Food Bank", "Fire Department",
)  # fmt: skip
COMPANY = (
    "Industries", "Holdings", "Group", "Systems", "Partners", "Foods", "Energy", "Motors",
    "Media", "Capital", "Airlines", "Bank", "Insurance", "Steel", "Software", "Farms",
)  # fmt: skip
ROLE = (
    "mayor", "director", "professor", "minister", "coach", "chairman", "president", "founder",
    "manager", "researcher", "economist", "treasurer", "engineer", "principal", "nurse",
    "planner", "historian", "farmer", "curator", "pastor", "judge", "lawyer", "architect",
    "pilot", "editor", "consultant", "teacher", "scientist", "banker", "sheriff",
)  # fmt: skip
GROUP = (
    "residents", "parents", "teachers", "nurses", "farmers", "students", "drivers", "investors",
    "voters", "engineers", "volunteers", "commuters", "tenants", "officials", "fans",
    "scientists", "doctors", "workers", "economists", "analysts", "critics", "neighbors",
    "visitors", "landlords", "artists", "athletes", "pilots", "lawyers", "families", "children",
    "patients", "customers", "members", "managers", "builders", "owners", "readers", "guests",
)  # fmt: skip
NOUN = (
    "schools", "bridges", "parks", "clinics", "buses", "homes", "libraries", "roads", "farms",
    "factories", "stores", "jobs", "programs", "trails", "hospitals", "apartments", "panels",
    "pipes", "classrooms", "museums", "restaurants", "trains", "studios", "markets", "shelters",
    "gardens", "offices", "theaters", "pools", "camps", "grants", "vaccines", "computers",
    "drones", "batteries", "sensors", "tickets", "permits", "contracts", "loans", "trucks",
    "boats", "hotels", "towers", "tunnels", "wells", "courts", "kitchens", "cameras", "fences",
    "roofs", "benches", "lights", "houses", "churches", "stations", "ships", "cars", "bikes",
    "phones", "books", "maps", "fields", "lakes", "rivers", "streets", "docks", "yards",
)  # fmt: skip
ADJ = (
    "new", "modern", "local", "regional", "cheap", "historic", "temporary", "public", "private",
    "small", "large", "rural", "urban", "digital", "popular", "expensive", "old", "crowded",
    "remote", "northern", "southern", "eastern", "western", "free", "safer", "cleaner",
    "quieter", "faster", "wooden", "electric", "solar", "shared", "empty", "busy", "narrow",
    "wide", "famous", "unusual", "hidden", "vacant", "mobile", "flooded", "green", "bright",
    "quiet", "major", "minor", "national", "central", "open",
)  # fmt: skip
#: (bare, past) verb forms.
VERB = (
    ("build", "built"), ("open", "opened"), ("close", "closed"), ("expand", "expanded"),
    ("review", "reviewed"), ("fund", "funded"), ("replace", "replaced"), ("repair", "repaired"),
    ("launch", "launched"), ("test", "tested"), ("study", "studied"), ("cancel", "canceled"),
    ("delay", "delayed"), ("approve", "approved"), ("reject", "rejected"), ("sell", "sold"),
    ("buy", "bought"), ("hire", "hired"), ("train", "trained"), ("support", "supported"),
    ("reduce", "reduced"), ("restore", "restored"), ("share", "shared"), ("inspect", "inspected"),
    ("design", "designed"), ("deliver", "delivered"), ("protect", "protected"),
    ("rebuild", "rebuilt"), ("rent", "rented"), ("paint", "painted"), ("clean", "cleaned"),
    ("donate", "donated"), ("order", "ordered"), ("move", "moved"), ("connect", "connected"),
    ("lease", "leased"), ("visit", "visited"), ("count", "counted"), ("sort", "sorted"),
    ("ban", "banned"),
)  # fmt: skip
REPORT = (
    "said", "noted", "added", "explained", "warned", "argued", "insisted", "stressed",
    "confirmed", "suggested", "predicted", "admitted", "claimed", "announced", "wrote",
    "recalled",
)  # fmt: skip
INTEND = (
    "planned", "hoped", "wanted", "expected", "promised", "agreed", "refused", "voted",
    "decided", "tried", "failed", "offered",
)  # fmt: skip
WEEKDAY = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTH = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
PERIOD = ("week", "month", "year", "spring", "summer", "fall", "winter", "season", "weekend")
EVENT = (
    "meeting", "protest", "hearing", "rally", "vote", "festival", "workshop", "fundraiser",
    "conference", "parade", "auction", "concert", "debate", "fair", "race",
)  # fmt: skip
DOCUMENT = ("report", "study", "survey", "audit", "review", "analysis", "poll", "census")
THING = ("plan", "proposal", "budget", "measure", "project", "deal", "decision", "program")
MOOD = (
    "cautious", "optimistic", "skeptical", "confident", "frustrated", "pleased", "surprised",
    "concerned", "hopeful", "divided", "angry", "relieved", "puzzled", "patient", "upset",
)  # fmt: skip
TREND = (
    "rose", "fell", "jumped", "dropped", "climbed", "slipped", "grew", "doubled", "declined",
    "recovered",
)  # fmt: skip
METRIC = (
    "Sales", "Prices", "Rents", "Demand", "Costs", "Orders", "Exports", "Imports", "Visits",
    "Repairs", "Profits", "Wages",
)  # fmt: skip
FEEL = ("want", "support", "oppose", "use", "fear", "ignore", "need", "like", "avoid", "own")
MODAL = ("will", "must", "should", "could", "might", "cannot", "would")
#: Word choices inside patterns: a fixed word pair in every instance of a pattern would be a
#: bigram whose (fixed) green or red colour shifts the z-score of every text the same way.
#: ("a" becomes "an" before a vowel; {city} and {org} are filled in.)
ROLE_OF = ("the", "a", "a local", "{city}'s", "one", "a former")
A_ROLE = ("a", "the", "a senior", "a former", "a veteran", "an acting")
SOME = ("the", "many", "some", "local", "most", "few", "angry", "young", "older")
SOURCE_OF = ("the", "one", "another", "a new", "a recent", "last year's", "{org}'s")
FOUND = ("found", "showed", "suggested", "estimated", "claimed", "concluded")
HAS = ("has", "now has", "had", "counts", "reported", "listed")
FROM = ("up from", "down from", "compared with", "against", "versus", "after")
ABOUT = ("", "about ", "nearly ", "almost ", "over ", "less than ", "at least ")
DET = ("two", "three", "four", "five", "several", "many", "some", "these", "all", "most")
STREET = ("Street", "Road", "Avenue", "Lane", "Drive", "Way")
AMOUNT = ("thousand", "million", "billion")
CLOSINGS = (
    "{Org} did not respond to a request for comment.",
    "The next {event} is set for {month} {day}.",
    "More information is available from {org}.",
    "{person2} contributed reporting from {city}.",
)


class _Document:
    """One document's cast and random stream."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.lead = (self.pick(FIRST), self.pick(LAST))
        self.home = self.pick(CITY)
        self.org = self.organisation()
        self.patterns: tuple[Callable[[], str], ...] = (
            self.action, self.intention, self.reported, self.quote, self.statistic,
            self.crowd, self.survey, self.count_change, self.reaction, self.cost,
        )  # fmt: skip

    # -- drawing ------------------------------------------------------------------------------
    def pick(self, options: Sequence[Any]) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def between(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high + 1))

    def with_article(self, prefixes: Sequence[str], word: str) -> str:
        prefix = self.pick(prefixes).format(city=self.pick(CITY), org=self.org)
        if prefix == "a" and word[0] in "aeiou":
            prefix = "an"
        return f"{prefix} {word}"

    # -- words --------------------------------------------------------------------------------
    def organisation(self) -> str:
        if self.chance(0.5):
            return f"the {self.pick(CITY)} {self.pick(CIVIC)}"
        return f"{self.pick(LAST)} {self.pick(COMPANY)}"

    def person2(self) -> str:
        return f"{self.pick(FIRST)} {self.pick(LAST)}"

    def city(self) -> str:
        return self.home if self.chance(0.4) else self.pick(CITY)

    def number(self) -> str:
        if self.chance(0.7):
            return str(self.between(2, 99))
        return str(self.between(100, 999))

    def percent(self) -> str:
        return f"{self.between(1, 99)} percent"

    def money(self) -> str:
        return f"${self.between(1, 999)} {self.pick(AMOUNT)}"

    # -- phrases ------------------------------------------------------------------------------
    def subject(self) -> str:
        kind = self.pick(("lead", "surname", "role", "org", "other", "count", "group"))
        return {
            "lead": lambda: " ".join(self.lead),
            "surname": lambda: self.lead[1],
            "role": lambda: self.with_article(ROLE_OF, self.pick(ROLE)),
            "org": lambda: self.org,
            "other": lambda: (
                f"{self.person2()}, {self.with_article(A_ROLE, self.pick(ROLE))} "
                f"{self.pick(('at', 'of', 'with', 'for'))} {self.organisation()},"
            ),
            "count": lambda: f"{self.number()} {self.pick(GROUP)}",
            "group": lambda: f"{self.pick(SOME)} {self.pick(GROUP)}",
        }[kind]()

    def object(self) -> str:
        kind = self.pick(("count", "the", "det"))
        if kind == "count":
            return f"{self.number()} {self.pick(ADJ)} {self.pick(NOUN)}"
        if kind == "the":
            return f"the {self.pick(ADJ)} {self.pick(NOUN)}"
        return f"{self.pick(DET)} {self.pick(NOUN)}"

    def place(self) -> str:
        kind = self.pick(("city", "street", "none"))
        if kind == "city":
            return f" in {self.city()}"
        if kind == "street":
            return f" on {self.pick(LAST)} {self.pick(STREET)}"
        return ""

    def past(self) -> str:
        kind = self.pick(("day", "month", "last", "none"))
        return {
            "day": lambda: f" on {self.pick(WEEKDAY)}",
            "month": lambda: f" in {self.pick(MONTH)}",
            "last": lambda: f" last {self.pick(PERIOD)}",
            "none": lambda: "",
        }[kind]()

    def future(self) -> str:
        kind = self.pick(("next", "by", "year", "none"))
        return {
            "next": lambda: f" next {self.pick(PERIOD)}",
            "by": lambda: f" by {self.pick(MONTH)}",
            "year": lambda: f" in {self.between(2025, 2040)}",
            "none": lambda: "",
        }[kind]()

    # -- sentences ----------------------------------------------------------------------------
    def action(self) -> str:
        return f"{self.subject()} {self.pick(VERB)[1]} {self.object()}{self.place()}{self.past()}."

    def intention(self) -> str:
        verb = self.pick(VERB)[0]
        return f"{self.subject()} {self.pick(INTEND)} to {verb} {self.object()}{self.future()}."

    def reported(self) -> str:
        clause = f"{self.subject()} would {self.pick(VERB)[0]} {self.object()}{self.place()}"
        return f"{self.subject()} {self.pick(REPORT)} that {clause}{self.future()}."

    def quote(self) -> str:
        if self.chance(0.5):
            said = f"{self.pick(MODAL)} {self.pick(VERB)[0]} {self.object()}{self.future()}"
            words = f"{self.pick(('We', 'They', 'I', 'You', 'Nobody'))} {said}"
        else:
            who = f"{_capital(self.pick(SOME))} {self.pick(GROUP)}"
            words = f"{who} {self.pick(FEEL)} {self.pick(ADJ)} {self.pick(NOUN)}"
        speaker = self.lead[1] if self.chance(0.6) else self.person2()
        return f'"{words}," {speaker} {self.pick(REPORT)}.'

    def statistic(self) -> str:
        what = f"{self.pick(METRIC)} {self.pick(('of', 'for', 'at'))} {self.pick(NOUN)}"
        change = f"{self.pick(TREND)} {self.percent()}{self.past()}"
        return f"{what} {change}, {self.org} {self.pick(REPORT)}."

    def crowd(self) -> str:
        verb = self.pick(("attended", "joined", "opposed", "left", "watched"))
        event = f"the {self.pick(EVENT)}{self.place()}{self.past()}"
        about = self.pick(("About", "Nearly", "Some", "Roughly", "Almost", "Over", "Around"))
        return f"{about} {self.number()} {self.pick(GROUP)} {verb} {event}."

    def survey(self) -> str:
        share = f"{self.percent()} of {self.pick(GROUP)} in {self.city()}"
        source = f"{self.with_article(SOURCE_OF, self.pick(DOCUMENT))} {self.pick(FOUND)}"
        return f"{source} that {share} {self.pick(FEEL)} {self.pick(ADJ)} {self.pick(NOUN)}."

    def count_change(self) -> str:
        now = f"{self.pick(HAS)} {self.number()} {self.pick(ADJ)} {self.pick(NOUN)}"
        then = f"{self.pick(FROM)} {self.number()} in {self.between(1990, 2023)}"
        return f"{self.city()} {now}, {then}."

    def reaction(self) -> str:
        about = f"{self.pick(('the', 'a', 'this', 'that'))} {self.pick(THING)}"
        about += f" to {self.pick(VERB)[0]} {self.object()}"
        feel = f"{self.pick(('were', 'are', 'seemed', 'remain'))} {self.pick(MOOD)}"
        who = f"{self.pick(GROUP)} in {self.city()}"
        return (
            f"{who} {feel} {self.pick(('about', 'over', 'after'))} {about}, {self.lead[1]} "
            f"{self.pick(REPORT)}."
        )

    def cost(self) -> str:
        plan = f"{self.pick(('the', 'a', 'this', 'one'))} {self.pick(THING)}"
        plan += f" to {self.pick(VERB)[0]} {self.object()}"
        cost = f"{self.pick(MODAL)} cost {self.pick(ABOUT)}{self.money()}"
        return f"{plan} {cost}, {self.subject()} {self.pick(REPORT)}."

    def sentence(self) -> str:
        return _capital(self.pick(self.patterns)())

    def closing(self) -> str:
        template = self.pick(CLOSINGS)
        return template.format(
            Org=_capital(self.org), org=self.org, event=self.pick(EVENT), month=self.pick(MONTH),
            day=self.between(1, 28), person2=self.person2(), city=self.pick(CITY),
        )  # fmt: skip

    def text(self) -> str:
        """A dateline, sentences up to the drawn length in paragraphs of a few sentences, and a
        closing line; stopping at a sentence keeps the length within one sentence of the
        target."""
        target = self.between(*LENGTH)
        paragraphs = [[f"{self.home.upper()} - {self.action()}"]]
        size = len(paragraphs[0][0])
        left = self.between(*SENTENCES)
        while size < target:
            if left == 0:
                paragraphs.append([])
                left = self.between(*SENTENCES)
            paragraphs[-1].append(self.sentence())
            size += len(paragraphs[-1][-1]) + 1
            left -= 1
        paragraphs.append([self.closing()])
        return "\n".join(" ".join(p) for p in paragraphs)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def documents(n: int, seed: int) -> list[str]:
    """``n`` documents; document ``i`` is drawn from its own stream ``(seed, i)``."""
    return [_Document(np.random.default_rng([seed, i])).text() for i in range(n)]


#: C4's realnewslike timestamps fall in April 2019; ours spread over the months before it.
_EPOCH = dt.datetime(2019, 1, 1, tzinfo=dt.UTC)
_SPAN_S = 120 * 24 * 3600


def c4_records(texts: Sequence[str], seed: int) -> list[dict[str, str]]:
    """One C4-style record per text: ``text``, an ISO ``timestamp`` and a unique ``url``."""
    rng = np.random.default_rng([seed, 1 << 20])
    records = []
    for i, text in enumerate(texts):
        when = _EPOCH + dt.timedelta(seconds=int(rng.integers(_SPAN_S)))
        records.append(
            {
                "text": text,
                "timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "url": f"https://news.example/{_slug(text)}-{i}",
            }
        )
    return records


def _slug(text: str, words: int = 6) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", text.lower())[:words]) or "article"
