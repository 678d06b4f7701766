"""Phoneme and word timings from the durations the model decided (lip-sync, karaoke, subtitles).

Each token lasts a whole number of frames, and a frame is ``hop_length`` samples, so timings are
exact: they add up to the sentence's audio to the sample. Tokens are grouped as Piper groups its
alignments: a symbol takes the blank (or pad) tokens that follow it (``^ _``, ``h _``, ..., ``$``);
a leading blank goes with the first symbol. Words are the runs of symbols between spaces; each gets
the text of its word when the text as written, or else as cleaned, has as many words as the phonemes
(espeak-ng may read one written word as two, and then only the phonemes are given).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class PhonemeTiming:
    symbol: str
    ids: list[int]
    start: float  # seconds from the start of the sentence
    end: float
    samples: int


@dataclass
class WordTiming:
    phonemes: str
    text: str | None
    start: float
    end: float


@dataclass
class Alignment:
    """Timings of one sentence; ``offset`` (seconds) places it in a longer output."""

    phonemes: list[PhonemeTiming]
    words: list[WordTiming] = field(default_factory=list)
    samples: int = 0
    sample_rate: int = 0

    def to_dict(self, offset: float = 0.0) -> dict:
        def moved(items):
            return [{**asdict(i), "start": round(i.start + offset, 6), "end": round(i.end + offset, 6)} for i in items]

        return {"start": round(offset, 6), "end": round(offset + self.samples / self.sample_rate, 6),
                "samples": self.samples, "phonemes": moved(self.phonemes), "words": moved(self.words)}


@dataclass(frozen=True)
class Symbols:
    """What the alignment needs to know of a tokenizer: id -> symbol, which ids are fillers (blank/pad)
    that belong to the symbol before them, and which symbol separates words."""

    names: dict[int, str]
    fillers: frozenset[int]
    boundaries: frozenset[int] = frozenset()  # bos / eos: phonemes of their own, in no word
    space: str = " "


def align(ids: list[int], frames: list[int], symbols: Symbols, hop_length: int, sample_rate: int,
          audio_samples: int, words: list[list[str]] = ()) -> Alignment:
    """Timings for ``ids`` lasting ``frames`` each; ``audio_samples`` is the sentence's audio length (the
    graph gives a sentence whose durations are all zero one frame: it goes to the last phoneme). ``words``:
    candidate spellings of the sentence's words; the first with as many words as the phonemes names them."""
    if len(ids) != len(frames):
        raise ValueError(f"{len(ids)} ids but {len(frames)} durations")
    groups: list[list[int]] = []  # token indices
    pending: list[int] = []
    for k, token in enumerate(ids):
        if token in symbols.fillers:
            (groups[-1] if groups else pending).append(k)
        else:
            groups.append(pending + [k])
            pending = []
    if pending:
        groups.append(pending)
    samples = [sum(frames[k] for k in group) * hop_length for group in groups]
    if groups:
        samples[-1] += audio_samples - sum(samples)
    phonemes, at = [], 0
    for group, n in zip(groups, samples):
        symbol = "".join(symbols.names.get(ids[k], "") for k in group if ids[k] not in symbols.fillers)
        phonemes.append(PhonemeTiming(symbol, [ids[k] for k in group], at / sample_rate, (at + n) / sample_rate, n))
        at += n
    return Alignment(phonemes, _words(phonemes, symbols, words), audio_samples, sample_rate)


def _trim(word: str) -> str:
    start = next(k for k, ch in enumerate(word) if ch.isalnum())
    end = len(word) - next(k for k, ch in enumerate(reversed(word)) if ch.isalnum())
    return word[start:end]


def _spoken(p: PhonemeTiming) -> bool:
    return any(ch.isalnum() for ch in p.symbol)


def _words(phonemes: list[PhonemeTiming], symbols: Symbols, candidates: list[list[str]]) -> list[WordTiming]:
    runs: list[list[PhonemeTiming]] = [[]]
    for p in phonemes:
        if p.symbol == symbols.space:
            runs.append([])
        elif p.symbol and not (set(p.ids) & symbols.boundaries):
            runs[-1].append(p)
    trimmed = []
    for run in runs:  # punctuation at either end is a pause, not the word
        spoken = [k for k, p in enumerate(run) if _spoken(p)]
        if spoken:
            trimmed.append(run[spoken[0]: spoken[-1] + 1])
    runs = trimmed
    texts: list = [None] * len(runs)
    for words in candidates:  # "there," -> "there"; a lone "-" is no word
        words = [_trim(w) for w in words if any(ch.isalnum() for ch in w)]
        if len(words) == len(runs):
            texts = words
            break
    return [WordTiming("".join(p.symbol for p in run), text, run[0].start, run[-1].end)
            for run, text in zip(runs, texts)]


class Timeline:
    """The timings of a whole output, each sentence placed where it starts: called with every chunk as it is
    written (``Voice.write_wav``'s ``on_chunk``, or a stream's loop), it counts the samples before each sentence."""

    def __init__(self) -> None:
        self.sentences: list[dict] = []
        self.samples = 0

    def __call__(self, chunk) -> None:
        if chunk.alignment is not None:  # a sentence's first chunk carries its timings
            entry = chunk.alignment.to_dict(offset=self.samples / chunk.sample_rate)
            self.sentences.append({"text": chunk.text, **entry})
        self.samples += len(chunk.audio)

    def to_dict(self, sample_rate: int) -> dict:
        return {"sample_rate": sample_rate, "samples": self.samples, "seconds": round(self.samples / sample_rate, 6),
                "sentences": self.sentences}
