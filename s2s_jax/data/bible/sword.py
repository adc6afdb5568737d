"""Reading verses out of installed SWORD Bible modules with pysword.

Debian installs the modules under ``/usr/share/sword`` (``mods.d/*.conf`` plus
``modules/texts/ztext/<module>/``). pysword reads them but decompresses a whole block (a whole
book here) for every verse it returns; `CachedZTextModule` keeps each decompressed block so a full
Bible reads in about a second instead of minutes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

DEFAULT_SWORD_PATH = "/usr/share/sword"

# Module names (the ``[name]`` in the conf file), not the Debian package names.
SPANISH_MODULE = "spaRV1909eb"  # Reina-Valera 1909, KJV versification
ENGLISH_MODULE = "engWEB2015eb"  # World English Bible with Deuterocanon, NRSVA versification

# Debian package that installs each module.
MODULE_PACKAGES = {SPANISH_MODULE: "sword-text-sparv", ENGLISH_MODULE: "sword-text-web"}

# (OSIS book id, chapter, verse), e.g. ("John", 3, 16).
VerseRef = tuple[str, int, int]


class SwordModuleError(ValueError):
    """Raised when pysword or a SWORD module the corpus needs is not installed."""


def _import_pysword():
    try:
        from pysword import bible, modules
    except ImportError as error:
        raise SwordModuleError(
            "Reading SWORD modules needs pysword: `pip install pysword` (see docs/bible_corpus.md)."
        ) from error
    return bible, modules


def _cached_module_classes() -> dict[str, type]:
    """ModDrv (lower case) -> a pysword module class that caches decompressed blocks."""
    bible, _ = _import_pysword()

    class CacheMixin:
        """Keeps every decompressed block; a module is a few MB, so memory is no concern."""

        def _decompressed_text(self, testament: str, buf_num: int) -> bytes:
            cache = self.__dict__.setdefault("_block_cache", {})
            key = (testament, buf_num)
            if key not in cache:
                cache[key] = super()._decompressed_text(testament, buf_num)
            return cache[key]

    class CachedZTextModule(CacheMixin, bible.ZTextModule):
        pass

    class CachedZTextModule4(CacheMixin, bible.ZTextModule4):
        pass

    # Raw-text modules are not compressed, so reading them per verse is already cheap.
    return {
        "ztext": CachedZTextModule,
        "ztext4": CachedZTextModule4,
        "rawtext": bible.RawTextModule,
        "rawtext4": bible.RawTextModule4,
    }


def _missing_modules_message(sword_path: str, missing: list[str]) -> str:
    packages = " ".join(MODULE_PACKAGES.get(name, name) for name in missing)
    return (
        f"SWORD module(s) {', '.join(missing)} not found under {sword_path!r}. Install them with "
        f"`apt-get install {packages}` (Debian/Ubuntu; they go to {DEFAULT_SWORD_PATH}), or pass "
        "the SWORD directory that holds mods.d/ and modules/."
    )


def open_module(sword_path: str, name: str):
    """Opens one installed module with block caching.

    Args:
      sword_path: SWORD data directory holding ``mods.d/`` and ``modules/``.
      name: module name as in its conf file, e.g. `SPANISH_MODULE`.

    Returns:
      A pysword ``SwordBible`` whose decompressed blocks are cached.

    Raises:
      SwordModuleError: if pysword, the directory or the module is missing, naming what to install.
    """
    bible, modules = _import_pysword()
    if not os.path.isdir(os.path.join(sword_path, "mods.d")):
        raise SwordModuleError(_missing_modules_message(sword_path, [name]))
    confs = modules.SwordModules(sword_path).parse_modules()
    if name not in confs:
        raise SwordModuleError(_missing_modules_message(sword_path, [name]))
    conf = confs[name]
    driver = conf.get("moddrv", "zText").lower()
    classes = _cached_module_classes()
    if driver not in classes:
        raise SwordModuleError(
            f"SWORD module {name!r} uses ModDrv={driver!r}, which is unsupported."
        )
    return classes[driver](
        os.path.join(sword_path, conf["datapath"]),
        driver,
        conf.get("versification", "kjv").lower(),
        # Without an Encoding key pysword tries UTF-8 and falls back to cp1252.
        conf["encoding"].lower() if "encoding" in conf else None,
        conf.get("sourcetype", "OSIS"),
        conf.get("blocktype", bible.BlockType.BOOK),
        conf.get("compresstype", bible.CompressType.ZIP),
        conf.get("cipherkey"),
    )


def check_modules(sword_path: str, names: tuple[str, ...]) -> None:
    """Raises `SwordModuleError` naming every missing module (and its Debian package) at once."""
    _import_pysword()
    conf_dir = os.path.join(sword_path, "mods.d")
    present = set()
    if os.path.isdir(conf_dir):
        from pysword import modules

        present = set(modules.SwordModules(sword_path).parse_modules())
    missing = [name for name in names if name not in present]
    if missing:
        raise SwordModuleError(_missing_modules_message(sword_path, missing))


def iter_raw_verses(sword_path: str, name: str) -> Iterator[tuple[VerseRef, str]]:
    """Yields every verse slot of a module in canonical order, as raw OSIS markup.

    Args:
      sword_path: SWORD data directory holding ``mods.d/`` and ``modules/``.
      name: module name as in its conf file.

    Yields:
      ``((osis_book, chapter, verse), markup)``; markup is ``""`` for slots the module leaves
      empty (verses it merged into a neighbour or does not have).
    """
    module = open_module(sword_path, name)
    for books in module.get_structure().get_books().values():
        for book in books:
            refs = [
                (book.osis_name, chapter, verse)
                for chapter, length in enumerate(book.chapter_lengths, start=1)
                for verse in range(1, length + 1)
            ]
            texts = module.get_iter(books=book.name, clean=False)
            yield from zip(refs, texts, strict=True)
