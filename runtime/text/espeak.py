"""The system ``espeak-ng`` program, run the way Coqui TTS runs it.

TTS's ``ESpeak`` phonemizer (``TTS/tts/utils/text/phonemizers/espeak_wrapper.py``) writes the text
to a temporary file and runs ``espeak-ng -q -b 1 -v LANG --ipa=1 -f FILE``; each non-empty output
line (one per clause) loses its ``(lang)`` switch flags and surrounding spaces, the lines are
joined, and the ``_`` phoneme separators are replaced. Punctuation is cut out before and put back
after (``punctuation.py``), as TTS's ``BasePhonemizer`` does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import tempfile

from . import libespeak
from .errors import EspeakNotFound, FrontendError, UnsupportedTokenizer
from .punctuation import DEFAULT_PUNCTUATIONS, Punctuation

logger = logging.getLogger("runtime.text")

_LANG_FLAG = re.compile(r"\(.+?\)")
INSTALL_HINT = "apt install espeak-ng"


def find_espeak() -> str:
    """Path of the ``espeak-ng`` program; EspeakNotFound (with the install hint) when it is not on PATH."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise EspeakNotFound(f"espeak-ng not found on PATH; phoneme voices need it: {INSTALL_HINT}")
    return path


class EspeakRunner:
    """One ``espeak-ng`` program and data folder; runs it on text and returns its output lines."""

    def __init__(self, espeak_data: str | os.PathLike | None = None) -> None:
        self.binary = find_espeak()
        self.data = None if espeak_data is None else os.fspath(espeak_data)
        if self.data is not None:
            if os.path.basename(os.path.normpath(self.data)) == "espeak-ng-data":
                self.data = os.path.dirname(os.path.normpath(self.data))  # --path wants the folder above it
            if not os.path.isfile(os.path.join(self.data, "espeak-ng-data", "phontab")):
                raise FrontendError(f"espeak_data {os.fspath(espeak_data)!r} is not an espeak-ng data folder "
                                    "(pass the folder holding espeak-ng-data, or espeak-ng-data itself)")
        self._languages: set[str] | None = None
        self.in_process = os.environ.get("VITS_EDGE_ESPEAK", "library") != "program"

    def run(self, args: list[str], text: str | None = None) -> list[str]:
        """stdout lines of ``espeak-ng -q -b 1 [--path=DATA] ARGS [-f FILE-with-text]``, without the final newline.

        Phonemes of a text come from libespeak-ng in this process where it can be loaded (the program's own
        calls, 12x faster: see libespeak.py); anything else runs the program."""
        parsed = libespeak.parse(args) if text is not None and self.in_process else None
        lib = libespeak.library(self.data) if parsed is not None else None
        if lib is not None:
            try:
                return libespeak.run(lib, parsed, text)
            except ValueError as exc:
                raise FrontendError(f"espeak-ng failed: {exc}") from exc
        cmd = [self.binary, "-q", "-b", "1"]
        if self.data is not None:
            cmd.append(f"--path={self.data}")
        cmd.extend(args)
        tmp = None
        try:
            if text is not None:
                fd, tmp = tempfile.mkstemp(prefix="vits-edge-", suffix=".txt")
                with os.fdopen(fd, "wb") as f:
                    f.write(text.encode("utf-8", errors="replace"))
                cmd.extend(["-f", tmp])
            proc = subprocess.run(cmd, capture_output=True, check=False)
        except OSError as exc:
            raise FrontendError(f"could not run {self.binary}: {exc}") from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        stderr = proc.stderr.decode("utf-8", errors="replace")
        for line in stderr.strip().split("\n"):  # its own chatter on odd input ("No envelope"): not the user's news
            if line.strip():
                logger.debug("espeak-ng: %s", line.strip())
        if proc.returncode != 0:
            raise FrontendError(f"espeak-ng failed (exit {proc.returncode}): {stderr.strip() or 'no message'}")
        out = proc.stdout.decode("utf-8", errors="replace")
        return out[:-1].split("\n") if out.endswith("\n") else out.split("\n")

    def languages(self) -> set[str]:
        """The language codes of ``espeak-ng --voices`` (what TTS accepts as a phoneme language)."""
        if self._languages is None:
            self._languages = {line.split()[1] for line in self.run(["--voices"])[1:] if len(line.split()) > 1}
        return self._languages

    def check_language(self, language: str) -> None:
        """UnsupportedTokenizer unless espeak-ng lists this language (TTS's ``is_supported_language``)."""
        if language not in self.languages():
            raise UnsupportedTokenizer(f"espeak-ng ({self.binary}) does not support language {language!r}")

    def check_voice(self, voice: str) -> None:
        """UnsupportedTokenizer unless ``espeak-ng -v VOICE`` works (a language, voice name or file)."""
        try:
            self.run(["-v", voice, "-x"], "a")
        except FrontendError as exc:
            raise UnsupportedTokenizer(f"espeak-ng ({self.binary}) cannot use voice {voice!r}: {exc}") from exc


class EspeakPhonemizer:
    """TTS's ``ESpeak`` phonemizer (espeak-ng backend, no tie) with punctuation kept and restored."""

    name = "espeak"

    def __init__(self, language: str, punctuations: str | None = None, *, keep_puncs: bool = True,
                 espeak_data: str | os.PathLike | None = None) -> None:
        if language == "en":  # TTS's band-aids
            language = "en-us"
        if language == "zh-cn":
            language = "cmn"
        self.runner = EspeakRunner(espeak_data)
        self.runner.check_language(language)
        self.language = language
        self.keep_puncs = keep_puncs
        self.punctuator = Punctuation(DEFAULT_PUNCTUATIONS if punctuations is None else punctuations)

    def phonemize_piece(self, text: str, separator: str = "") -> str:
        phonemes = ""
        for line in self.runner.run(["-v", self.language, "--ipa=1"], text):
            if line.strip():
                phonemes += _LANG_FLAG.sub("", line.strip()).strip()
        return phonemes.replace("_", separator)

    def phonemize(self, text: str, separator: str = "") -> str:
        text = text.strip()
        if not self.keep_puncs:
            return self.phonemize_piece(self.punctuator.strip(text), separator)
        pieces, puncs = self.punctuator.strip_to_restore(text)
        phonemized = [self.phonemize_piece(piece, separator) for piece in pieces]
        return self.punctuator.restore(phonemized, puncs)[0]
