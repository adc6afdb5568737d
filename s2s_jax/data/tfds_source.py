"""Random-access text examples from any TFDS translation dataset, without TensorFlow.

TFDS datasets prepared in the array_record format are read through ``tfds.data_source``: a
picklable, random-access sequence that Grain indexes directly. Nothing is downloaded unless
asked for; a dataset missing from `data_dir` fails with the exact command that prepares it.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds

from s2s_jax.data.types import Example

# Legacy TFDS builders (wmt*, ted_multi, ...) register themselves on import; importing the
# whole catalogue stops at the first module that needs TensorFlow, so import this one directly.
_CATALOGUE_MODULES = ("tensorflow_datasets.translate",)


class DatasetNotPreparedError(ValueError):
    """Raised when a TFDS dataset is unknown, unprepared, or in a non-random-access format."""


class TranslationSource(Sequence[Example]):
    """`source[i] -> {"inputs": src_text, "targets": tgt_text}`; a Grain random-access source.

    Args:
      records: a TFDS data source whose items are feature dicts (str or UTF-8 bytes values).
      src_lang: the feature holding source text.
      tgt_lang: the feature holding target text.
    """

    def __init__(self, records: Sequence[dict[str, Any]], src_lang: str, tgt_lang: str) -> None:
        self._records = records
        self.src_lang = src_lang
        self.tgt_lang = tgt_lang

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> Example:  # type: ignore[override]
        if not isinstance(index, int) and not hasattr(index, "__index__"):
            raise TypeError(f"TranslationSource takes integer indices, got {index!r}.")
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"Index {index} is out of range for {len(self)} examples.")
        return self._example(self._records[index % len(self)])

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        # Grain reads a batch of indices at once; array_record serves them in one call.
        read_many = getattr(self._records, "__getitems__", None)
        indices = [int(i) for i in indices]
        records = read_many(indices) if read_many else [self._records[i] for i in indices]
        return [self._example(r) for r in records]

    def _example(self, record: dict[str, Any]) -> Example:
        return {"inputs": _text(record[self.src_lang]), "targets": _text(record[self.tgt_lang])}

    def __repr__(self) -> str:
        return f"TranslationSource({self.src_lang}->{self.tgt_lang}, {len(self)} examples)"


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if hasattr(value, "item"):  # numpy scalars from some TFDS decoders
        return _text(value.item())
    return str(value)


def _import_catalogue() -> None:
    for module in _CATALOGUE_MODULES:
        # Without the catalogue the dataset may still be found as a prepared directory or a
        # builder class the caller imported.
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def _prepare_hint(name: str, data_dir: str | None) -> str:
    dir_arg = f", data_dir={data_dir!r}" if data_dir else ""
    return (
        "Prepare it in the array_record format, e.g. in Python: "
        f"tfds.builder({name!r}{dir_arg}, file_format='array_record').download_and_prepare() "
        "(or translation_source(..., download=True)), or with the TFDS command line: "
        f"tfds build {name} --file_format=array_record"
        + (f" --data_dir={data_dir}" if data_dir else "")
    )


def _builder(name: str, data_dir: str | None, download: bool) -> Any:
    """The dataset's builder, prepared in array_record (preparing it only if `download`)."""
    _import_catalogue()
    kwargs: dict[str, Any] = {"data_dir": data_dir}
    if download:
        kwargs["file_format"] = "array_record"
    try:
        builder = tfds.builder(name, **kwargs)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise DatasetNotPreparedError(
            f"TFDS has no dataset named {name!r} (data_dir={data_dir!r}). Check the name and "
            "config (e.g. 'wmt14_translate/de-en', 'ted_hrlr_translate/pt_to_en') and that the "
            f"module defining a custom builder is imported. TFDS said: {str(e)[:300]}"
        ) from e
    except ValueError as e:
        raise DatasetNotPreparedError(
            f"Could not open {name!r} in {data_dir!r}: {e}. It may be prepared in another file "
            "format; use another data_dir or delete that copy."
        ) from e
    if download and not builder.is_prepared():
        builder.download_and_prepare()
    if not builder.is_prepared():
        raise DatasetNotPreparedError(
            f"Dataset {name!r} is not prepared in {builder.data_dir!r} (data_dir={data_dir!r}). "
            + _prepare_hint(name, data_dir)
        )
    if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
        raise DatasetNotPreparedError(
            f"Dataset {name!r} in {builder.data_dir!r} is stored as "
            f"{builder.info.file_format.value}, which has no random access. Re-prepare it in a "
            f"separate data_dir. {_prepare_hint(name, data_dir)}"
        )
    return builder


def _check_languages(name: str, builder: Any, src_lang: str, tgt_lang: str) -> None:
    features = list(builder.info.features.keys())
    missing = [lang for lang in (src_lang, tgt_lang) if lang not in features]
    if missing or src_lang == tgt_lang:
        raise ValueError(
            f"Dataset {name!r} has text features {features}; src_lang={src_lang!r} and "
            f"tgt_lang={tgt_lang!r} must be two different ones of them."
        )


def translation_source(
    name: str,
    *,
    split: str,
    data_dir: str | None,
    src_lang: str,
    tgt_lang: str,
    download: bool = False,
) -> TranslationSource:
    """Opens one split of a TFDS translation dataset as random-access text examples.

    Args:
      name: TFDS name with config, e.g. "wmt14_translate/de-en" (features "de", "en") or
        "ted_hrlr_translate/pt_to_en" (features "pt", "en").
      split: a TFDS split, slicing allowed: "train", "validation", "test[:500]".
      data_dir: where TFDS datasets are prepared; None means TFDS's default
        (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      src_lang: feature holding the source text.
      tgt_lang: feature holding the target text.
      download: download and prepare the dataset (array_record) when it is not there yet.

    Returns:
      A `TranslationSource`: ``len()`` examples, ``source[i] -> {"inputs": src_text,
      "targets": tgt_text}`` as str.

    Raises:
      DatasetNotPreparedError: if the dataset is unknown, not prepared in `data_dir` (the
        message says how to prepare it), or not stored as array_record.
      ValueError: if a language is not a feature of the dataset or the split does not exist.
    """
    builder = _builder(name, data_dir, download)
    _check_languages(name, builder, src_lang, tgt_lang)
    try:
        records = builder.as_data_source(split=split)
    except ValueError as e:
        raise ValueError(
            f"Dataset {name!r} has no split {split!r} (splits: {sorted(builder.info.splits)}): {e}"
        ) from e
    return TranslationSource(records, src_lang, tgt_lang)
