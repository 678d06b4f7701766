"""espeak-ng's phonemes without starting a program: the ``espeak-ng`` program's own steps, in this process.

Starting ``espeak-ng`` costs 6-8 ms a time on a 2-core x86 (far more on a Raspberry Pi), and TTS's
phonemizer runs it once per punctuation-delimited piece: a 10-second sentence with three commas
spent 33 ms there, 13% of its whole synthesis, all of it before the first audio. The program is a
thin front on ``libespeak-ng`` (installed with it: Debian's ``libespeak-ng1``); this module makes
the calls its ``main`` makes for ``-q -b 1 -v VOICE --ipa[=1] | -x [--sep=S] TEXT`` (src/espeak-ng.c:
initialize with the data path, synchronous output, the voice by name, the phoneme trace, then
``espeak_Synth`` of the text with ``espeakCHARS_UTF8 | espeakPHONEMES | espeakENDPAUSE``) and reads
the trace from a memory stream. tests/test_frontend_parity.py holds it to the program's output on
hundreds of strings. The library keeps global state, so calls take a lock; a process uses one data
folder (another one, or no library, falls back to the program).

espeak-ng prints its own complaints on odd input ("espeak: No envelope" for '░ਝ') with ``fprintf(stderr,
...)``, and its API has no hook for them (``espeak_ng_PrintStatusCodeMessage`` reports only the status codes the
calls return). They are not the user's news, and a server's or batch job's stderr is its log, so for the length of
a call C's ``stderr`` (the FILE pointer, not file descriptor 2) points at a memory stream, whose lines go to the
debug log (``runtime.text``), as the program's captured stderr does. Descriptor 2 is not redirected: Python's
own writes and logging from every thread, and C++'s ``std::cerr`` (bound to the FILE it had at start), still reach
stderr during a call; only C code of another thread printing through ``stderr`` in those milliseconds would land
in the debug log instead. Outside glibc (whose ``stderr`` is a variable; musl's is constant) the messages stay on
stderr.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import threading

# speak_lib.h / espeak_ng.h
_SYNCHRONOUS = 0x0001  # ENOUTPUT_MODE_SYNCHRONOUS
_POS_CHARACTER = 1
_CHARS_UTF8, _PHONEMES, _ENDPAUSE = 1, 0x100, 0x1000
_SHOW, _IPA = 0x01, 0x02  # espeakPHONEMES_SHOW (-x), espeakPHONEMES_IPA (--ipa)
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)

class _Voice(ctypes.Structure):  # espeak_VOICE
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


_LOCK = threading.Lock()
_STATE: dict = {}
logger = logging.getLogger("runtime.text")


def parse(args: list[str]) -> tuple[str, int, int] | None:
    """``-v VOICE`` and ``--ipa``/``--ipa=1``/``-x``/``--sep=S`` -> (voice, phoneme options, separator); None for
    any other use of the program (it is then run as a program)."""
    voice, options, separator, rest = None, 0, 0, list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "-v" and rest:
            voice = rest.pop(0)
        elif arg == "--ipa":
            options |= _IPA
        elif arg == "--ipa=1":
            options |= _IPA
            separator = ord("_")
        elif arg == "-x":
            options |= _SHOW
        elif arg.startswith("--sep="):
            options |= _SHOW
            separator = ord(arg[len("--sep="):][:1] or " ")
        else:
            return None
    return (voice, options, separator) if voice and options else None


class _Library:
    def __init__(self, data: str | None):
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        lib = ctypes.CDLL(name)
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.open_memstream.restype = ctypes.c_void_p
        libc.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]
        libc.fclose.argtypes = [ctypes.c_void_p]
        libc.free.argtypes = [ctypes.c_void_p]
        lib.espeak_ng_InitializePath.argtypes = [ctypes.c_char_p]
        lib.espeak_ng_Initialize.argtypes = [ctypes.c_void_p]
        lib.espeak_ng_InitializeOutput.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_SetPhonemeTrace.argtypes = [ctypes.c_int, ctypes.c_void_p]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_ng_InitializePath(None if data is None else os.fsencode(data))
        if lib.espeak_ng_Initialize(None) != 0 or lib.espeak_ng_InitializeOutput(_SYNCHRONOUS, 0, None) != 0:
            raise OSError("libespeak-ng did not initialize")
        self._callback = _SYNTH_CALLBACK(lambda wav, samples, events: 0)  # no audio wanted (the program's -q)
        lib.espeak_SetSynthCallback(self._callback)
        self.lib, self.libc, self.data, self.voice = lib, libc, data, None
        self.stderr = None  # C's stderr, while a call runs pointed at a memory stream (see the module's docstring)
        with contextlib.suppress(ValueError, OSError):
            if os.confstr("CS_GNU_LIBC_VERSION"):
                self.stderr = ctypes.c_void_p.in_dll(ctypes.CDLL(None), "stderr")

    @contextlib.contextmanager
    def _messages_to_debug_log(self):
        if self.stderr is None:
            yield
            return
        buffer, size = ctypes.c_void_p(), ctypes.c_size_t()
        stream = self.libc.open_memstream(ctypes.byref(buffer), ctypes.byref(size))
        if not stream:
            yield
            return
        saved, self.stderr.value = self.stderr.value, stream
        try:
            yield
        finally:
            self.stderr.value = saved
            self.libc.fclose(stream)
            try:
                messages = ctypes.string_at(buffer, size.value).decode("utf-8", errors="replace")
            finally:
                self.libc.free(buffer)
            for line in messages.splitlines():
                if line.strip():
                    logger.debug("espeak-ng: %s", line.strip())

    def run(self, voice: str, options: int, separator: int, text: str) -> list[str]:
        lib, libc = self.lib, self.libc
        if voice != self.voice:
            name = voice.encode()
            # as the program: a voice by its name, else the first voice for that language
            by_language = _Voice(languages=name)
            if lib.espeak_SetVoiceByName(name) != 0 and lib.espeak_SetVoiceByProperties(ctypes.byref(by_language)) != 0:
                self.voice = None
                raise ValueError(f"espeak-ng cannot use voice {voice!r}")
            self.voice = voice
        buffer, size = ctypes.c_void_p(), ctypes.c_size_t()
        stream = libc.open_memstream(ctypes.byref(buffer), ctypes.byref(size))
        if not stream:
            raise OSError("open_memstream failed")
        try:
            lib.espeak_SetPhonemeTrace(options | (separator << 8), stream)
            data = text.encode("utf-8", errors="replace")
            with self._messages_to_debug_log():
                lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _PHONEMES | _ENDPAUSE, None,
                                 None)
            lib.espeak_SetPhonemeTrace(0, None)
        finally:
            libc.fclose(stream)
        try:
            out = ctypes.string_at(buffer, size.value).decode("utf-8", errors="replace")
        finally:
            libc.free(buffer)
        return out[:-1].split("\n") if out.endswith("\n") else out.split("\n")


def library(data: str | None) -> _Library | None:
    """The process's libespeak-ng for data folder ``data`` (None: the system's), or None when there is none
    or it already serves another folder."""
    with _LOCK:
        if "lib" not in _STATE:
            try:
                _STATE["lib"] = _Library(data)
            except (OSError, AttributeError):  # no library, or one without these functions
                _STATE["lib"] = None
        lib = _STATE["lib"]
        return lib if lib is not None and lib.data == data else None


def run(lib: _Library, parsed: tuple[str, int, int], text: str) -> list[str]:
    with _LOCK:
        return lib.run(*parsed, text)
