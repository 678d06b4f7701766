"""Abbreviation tables of Coqui TTS's cleaners (``TTS/tts/utils/text/{english,french,italian}``), verbatim.

The patterns are TTS's own, quirks included: in the French table a ``.`` inside an abbreviation
("N.B", "p.c.q") is a regex wildcard, as it is in TTS.
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger("runtime.text")

# fmt: off
_EN = [
    (re.compile(f"\\b{x[0]}\\.", re.IGNORECASE), x[1])
    for x in [
        ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"), ("co", "company"),
        ("jr", "junior"), ("maj", "major"), ("gen", "general"), ("drs", "doctors"), ("rev", "reverend"),
        ("lt", "lieutenant"), ("hon", "honorable"), ("sgt", "sergeant"), ("capt", "captain"),
        ("esq", "esquire"), ("ltd", "limited"), ("col", "colonel"), ("ft", "fort"),
    ]
]

_FR = [
    (re.compile(f"\\b{x[0]}\\.", re.IGNORECASE), x[1])
    for x in [
        ("M", "monsieur"),
        ("Mlle", "mademoiselle"),
        ("Mlles", "mesdemoiselles"),
        ("Mme", "Madame"),
        ("Mmes", "Mesdames"),
        ("N.B", "nota bene"),
        ("M", "monsieur"),
        ("p.c.q", "parce que"),
        ("Pr", "professeur"),
        ("qqch", "quelque chose"),
        ("rdv", "rendez-vous"),
        ("max", "maximum"),
        ("min", "minimum"),
        ("no", "numéro"),
        ("adr", "adresse"),
        ("dr", "docteur"),
        ("st", "saint"),
        ("co", "companie"),
        ("jr", "junior"),
        ("sgt", "sergent"),
        ("capt", "capitain"),
        ("col", "colonel"),
        ("av", "avenue"),
        ("av. J.-C", "avant Jésus-Christ"),
        ("apr. J.-C", "après Jésus-Christ"),
        ("art", "article"),
        ("boul", "boulevard"),
        ("c.-à-d", "c’est-à-dire"),
        ("etc", "et cetera"),
        ("ex", "exemple"),
        ("excl", "exclusivement"),
        ("boul", "boulevard"),
    ]
] + [
    (re.compile(f"\\b{x[0]}"), x[1])
    for x in [
        ("Mlle", "mademoiselle"),
        ("Mlles", "mesdemoiselles"),
        ("Mme", "Madame"),
        ("Mmes", "Mesdames"),
    ]
]

_END = r"(?=\s|$|[,\.;:\)\]\}\!?])"


def _c(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.IGNORECASE)


_IT = [
    # --- Courtesy / correspondence
    (_c(r"\bspett\.?\s*(?:le\.?)?\b" + _END), "spettabile"),
    (_c(r"\begr\.?\b" + _END), "egregio"),
    (_c(r"\bgent\.?\s*mo\.?\b" + _END), "gentilissimo"),
    (_c(r"\bgent\.?\s*ma\.?\b" + _END), "gentilissima"),
    (_c(r"\bill\.?\s*mo\.?\b" + _END), "illustrissimo"),
    (_c(r"\bill\.?\s*ma\.?\b" + _END), "illustrissima"),
    (_c(r"\batt\.?\b" + _END), "attenzione"),
    (_c(r"\bc\.?\s*a\.?\b" + _END), "cortese attenzione"),  # often "alla c.a."
    # --- People / titles / professions
    (_c(r"\bsig\.?" + _END), "signor"),
    (_c(r"\bsig\.?\s*ra\.?" + _END), "signora"),
    (_c(r"\bsig\.?\s*na\.?" + _END), "signorina"),
    (_c(r"\bsigg\.?" + _END), "signori"),
    (_c(r"\bdott\.?\b" + _END), "dottore"),
    (_c(r"\bdott\.?\s*ssa\.?\b" + _END), "dottoressa"),
    (_c(r"\bprof\.?\b" + _END), "professore"),
    (_c(r"\bprof\.?\s*ssa\.?\b" + _END), "professoressa"),
    (_c(r"\bing\.?\b" + _END), "ingegnere"),
    (_c(r"\barch\.?\b" + _END), "architetto"),
    (_c(r"\bavv\.?\b" + _END), "avvocato"),
    (_c(r"\bgeom\.?\b" + _END), "geometra"),
    (_c(r"\brag\.?\b" + _END), "ragioniere"),
    (_c(r"\bcomm\.?\b" + _END), "commercialista"),
    (_c(r"\bdott\.?\s*comm\.?\b" + _END), "dottore commercialista"),
    # --- Generic shorthand / Latin-ish
    (_c(r"\becc\.?\b" + _END), "eccetera"),
    (_c(r"\betc\.?\b" + _END), "eccetera"),
    (_c(r"\bes\.?\b" + _END), "per esempio"),
    (_c(r"\bp\.?\s*es\.?\b" + _END), "per esempio"),
    (_c(r"\bad\.?\s*es\.?\b" + _END), "ad esempio"),
    (_c(r"\bcioe\.?\b" + _END), "cioè"),
    (_c(r"\boss\.?\b" + _END), "ossia"),
    (_c(r"\bcfr\.?\b" + _END), "confronta"),
    (_c(r"\bvd\.?\b" + _END), "vedi"),
    (_c(r"\bvv\.?\b" + _END), "vedi"),
    # --- Document structure / references (useful for academic text)
    (_c(r"\bfig\.?\b" + _END), "figura"),
    (_c(r"\btab\.?\b" + _END), "tabella"),
    (_c(r"\beq\.?\b" + _END), "equazione"),
    (_c(r"\bsez\.?\b" + _END), "sezione"),
    (_c(r"\bsec\.?\b" + _END), "sezione"),
    (_c(r"\bcap\.?\b" + _END), "capitolo"),
    (_c(r"\bpar\.?\b" + _END), "paragrafo"),
    (_c(r"\bapp\.?\b" + _END), "appendice"),
    (_c(r"\bpagg\.?\b" + _END), "pagine"),
    (_c(r"\bpag\.?\b" + _END), "pagina"),
    # --- Identifiers / contact / numbering
    (_c(r"\btel\.?\b" + _END), "telefono"),
    (_c(r"\bcell\.?\b" + _END), "cellulare"),
    (_c(r"\bint\.?\b" + _END), "interno"),
    (_c(r"\bn\.?\b" + _END), "numero"),
    (_c(r"\bnn\.?\b" + _END), "numeri"),
    (_c(r"\bnr\.?\b" + _END), "numero"),
    (_c(r"\bcod\.?\s*fisc\.?\b" + _END), "codice fiscale"),
    (_c(r"\bc\.?\s*f\.?\b" + _END), "codice fiscale"),
    (_c(r"\bp\.?\s*iva\.?\b" + _END), "partita iva"),
    (_c(r"\bpiva\b" + _END), "partita iva"),
    # --- Dates / formal ref (common in letters)
    (_c(r"\bu\.?\s*s\.?\b" + _END), "ultimo scorso"),
    (_c(r"\bp\.?\s*v\.?\b" + _END), "prossimo venturo"),
    # --- Company legal forms (common in names)
    (_c(r"\bs\.?\s*p\.?\s*a\.?\b" + _END), "società per azioni"),
    (_c(r"\bs\.?\s*r\.?\s*l\.?\b" + _END), "società a responsabilità limitata"),
    (_c(r"\bs\.?\s*n\.?\s*c\.?\b" + _END), "società in nome collettivo"),
    (_c(r"\bs\.?\s*a\.?\s*s\.?\b" + _END), "società in accomandita semplice"),
    (_c(r"\bcoop\.?\b" + _END), "cooperativa"),
    (_c(r"\bonlus\b" + _END), "organizzazione non lucrativa di utilità sociale"),
    # --- Months (common in dates)
    (_c(r"\bgen\.?\b" + _END), "gennaio"),
    (_c(r"\bfeb\.?\b" + _END), "febbraio"),
    (_c(r"\bmar\.?\b" + _END), "marzo"),
    (_c(r"\bapr\.?\b" + _END), "aprile"),
    (_c(r"\bmag\.?\b" + _END), "maggio"),
    (_c(r"\bgiu\.?\b" + _END), "giugno"),
    (_c(r"\blug\.?\b" + _END), "luglio"),
    (_c(r"\bago\.?\b" + _END), "agosto"),
    (_c(r"\bset\.?\b" + _END), "settembre"),
    (_c(r"\bott\.?\b" + _END), "ottobre"),
    (_c(r"\bnov\.?\b" + _END), "novembre"),
    (_c(r"\bdic\.?\b" + _END), "dicembre"),
    # --- Web/contact tokens (optional but often helpful in prompts)
    (_c(r"\be-?mail\b" + _END), "email"),
    (_c(r"\bwww\.?\b" + _END), "doppia vu doppia vu doppia vu"),
]
# fmt: on

_TABLES = {"en": _EN, "fr": _FR, "it": _IT}


def expand_abbreviations(text: str, lang: str | None = "en") -> str:
    """TTS's ``expand_abbreviations``: only for en, fr and it; other languages (and None) pass through."""
    table = _TABLES.get(lang)  # type: ignore[arg-type]
    if table is None:
        logger.debug("Language %s not supported in expand_abbreviations()", lang)
        return text
    for regex, replacement in table:
        text = re.sub(regex, replacement, text)
    return text
