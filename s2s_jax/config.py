"""Run configuration: the base schema, experiment files and command-line overrides.

An experiment is a Python file with ``get_config(variant: str = "") -> ConfigDict`` that starts
from :func:`base_config` and changes fields. The base config is locked, so an experiment or an
override that names a key the schema does not have fails with the list of valid keys.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

from s2s_jax.config_values import check_values
from s2s_jax.models.parts import part_defaults

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EXPERIMENT = "experiments/reverse_attention.py"


class ConfigError(ValueError):
    """A config key or value is invalid."""


def base_config() -> ml_collections.ConfigDict:
    """Every key a run may set, with defaults. Experiments override a few of them."""
    c = ml_collections.ConfigDict()
    c.name = "default"
    c.seed = 0

    c.model = m = ml_collections.ConfigDict()
    # An encoder and a decoder, each a registered type with only its own keys
    # (s2s_jax/models/registry.py); switch one with model_part() or --config.model.encoder.type=.
    m.encoder = model_part("encoder", "rnn")
    m.decoder = model_part("decoder", "rnn")
    m.share_embeddings = False  # one token table for source and target (joint vocabulary)
    m.dtype = "float32"  # compute dtype
    m.param_dtype = "float32"  # storage dtype

    c.data = d = ml_collections.ConfigDict()
    d.task = "reverse"  # reverse | copy | sort | addition | noisy_digits (float frames)
    d.min_length = 5
    d.max_length = 20
    d.num_train = 20000
    d.num_eval = 1000
    d.noise_std = 0.15  # noisy_digits: Gaussian noise on each one-hot frame (see data/tasks.py)
    d.batch_size = 64
    d.buckets = ()  # length boundaries; () picks them from max_length / max_tokens
    # Real data (data.source="tfds"): any TFDS translation dataset, SentencePiece tokens.
    d.source = "task"  # task (synthetic, character vocabulary) | tfds
    d.tfds_name = "bible_es_en"  # e.g. wmt14_translate/de-en, ted_hrlr_translate/pt_to_en
    d.tfds_data_dir = ""  # "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    d.src_lang = "es"
    d.tgt_lang = "en"
    d.train_split = "train"
    d.eval_split = "validation"
    d.vocab_size = 8000  # SentencePiece ids per vocabulary, specials included
    d.spm_model_type = "unigram"  # unigram | bpe
    d.shared_vocab = True
    d.max_tokens = 64  # training pairs longer than this (tokens incl. EOS) are dropped
    d.pack_length = 0  # > 0: pack examples into rows of this length (Transformer only)

    c.train = t = ml_collections.ConfigDict()
    t.num_steps = 2000
    t.optimizer = "adam"  # adam | adamw
    t.learning_rate = 3e-3
    t.schedule = "cosine"  # constant | cosine | linear | rsqrt
    t.warmup_steps = 100
    t.weight_decay = 0.0
    t.grad_clip_norm = 1.0
    t.label_smoothing = 0.0
    t.log_every = 50

    c.eval = e = ml_collections.ConfigDict()
    e.every_steps = 500
    e.batch_size = 250
    e.max_examples = 1000  # 0 means the whole eval split
    e.num_show = 5
    # Names from s2s_jax/evaluation/metrics.py METRICS, e.g. ("bleu", "chrf", "rouge1", "wer");
    # () means the data's defaults (Data.default_metrics). Loss and token accuracy are always on.
    e.metrics = ()
    e.decode = "greedy"  # greedy | beam
    e.beam_size = 4
    e.alpha = 0.6
    e.nbest = 1
    e.max_length_ratio = 1.5  # decode at most ratio * source_length + offset tokens
    e.max_length_offset = 5

    c.checkpoint = k = ml_collections.ConfigDict()
    k.every_steps = 500
    k.keep = 3
    k.async_save = True

    c.parallel = p = ml_collections.ConfigDict()
    # Mesh axis sizes; -1 means "all remaining devices". data * fsdp * tensor = device count.
    p.data = -1
    p.fsdp = 1
    p.tensor = 1
    p.grad_accum_steps = 1  # micro-batches per optimizer update (batch_size is the total)
    # Multi-host: initialise jax.distributed (arguments fall back to the usual environment).
    p.distributed = False
    p.coordinator_address = ""
    p.num_processes = 0
    p.process_id = -1

    c.profile = f = ml_collections.ConfigDict()
    f.trace_steps = ()  # (start, stop): capture a jax.profiler trace of those steps
    f.dump_hlo = False  # write the optimized HLO of the train step into the workdir
    f.peak_flops = 0.0  # per-device peak FLOP/s for MFU; 0 = known table or measured matmul
    f.log_mfu = True  # log FLOPs/step, FLOP/s and MFU with the train metrics
    c.lock()
    return c


MODEL_PARTS = ("encoder", "decoder")


def model_part(side: str, type_name: str, **values: Any) -> ml_collections.ConfigDict:
    """A locked ``model.encoder`` / ``model.decoder`` section of a registered type.

    Args:
      side: "encoder" or "decoder".
      type_name: a registered type (``models.registry.ENCODERS`` / ``DECODERS``).
      **values: keys of that type to change from their defaults.

    Example: ``c.model.encoder = model_part("encoder", "transformer", d_model=256)``.
    """
    try:
        defaults = part_defaults(side, type_name)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    section = ml_collections.ConfigDict(defaults)
    for key, value in values.items():
        if key not in defaults or key == "type":
            close = difflib.get_close_matches(key, list(defaults), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"model.{side} of type {type_name!r} has no key {key!r}.{hint} Its keys: "
                f"{', '.join(k for k in defaults if k != 'type')}."
            )
        section[key] = value
    section.lock()
    return section


def set_parts(model: ml_collections.ConfigDict, **values: Any) -> None:
    """Sets each key to the same value in ``model.encoder`` and ``model.decoder``.

    For what both sides share (e.g. a Transformer's ``d_model`` or an LSTM's ``hidden_size``);
    a key either side lacks is a ConfigError.
    """
    for side in MODEL_PARTS:
        section = model[side]
        for key, value in values.items():
            if key not in section or key == "type":
                raise ConfigError(
                    f"model.{side} of type {section.type!r} has no key {key!r}; set it on the "
                    f"side that has it. Its keys: {', '.join(k for k in section if k != 'type')}."
                )
            section[key] = value


def make_tiny(config: ml_collections.ConfigDict, min_length: int = 3, max_length: int = 6):
    """Shrinks data, schedule and evaluation in place so a run takes seconds (``:tiny`` variants).

    Model sizes are the experiment's to shrink; this handles everything else.
    """
    config.name += "_tiny"
    d, t, e = config.data, config.train, config.eval
    d.min_length, d.max_length = min_length, max_length
    d.num_train, d.num_eval, d.batch_size = 512, 64, 16
    t.num_steps, t.log_every, t.warmup_steps = 20, 5, 5
    e.every_steps, e.batch_size, e.max_examples = 10, 32, 64
    config.checkpoint.every_steps = 10
    config.profile.log_mfu = False  # measuring the matmul peak would take longer than the run
    return config


def fixed_length_data(config: ml_collections.ConfigDict, *, length: int, batch_size: int):
    """Benchmark data in place: every batch is exactly ``[batch_size, length]`` on both sides.

    The copy task with sources of ``length - 1`` symbols (+ EOS) and one bucket; benchmarks swap
    in a larger synthetic vocabulary (``s2s profile --vocab-size``), only the shapes come from here.
    """
    d = config.data
    d.task = "copy"
    d.min_length = d.max_length = length - 1
    d.buckets = (length,)
    d.num_train, d.num_eval, d.batch_size = 16 * batch_size, batch_size, batch_size
    config.train.num_steps = 200
    config.eval.every_steps = config.checkpoint.every_steps = 100
    config.eval.batch_size, config.eval.max_examples = batch_size, batch_size
    return config


def load_experiment(path: str | Path, variant: str = "") -> ml_collections.ConfigDict:
    """Loads ``get_config(variant)`` from an experiment file.

    Args:
      path: the experiment file; relative paths are tried against the working directory and then
        against the source checkout (so ``experiments/x.py`` works from anywhere).
      variant: passed to ``get_config`` (e.g. ``"tiny"``); "" is the full experiment.
    """
    file = _find_experiment(path)
    if file.suffix != ".py":
        raise ConfigError(
            f"{file} is not an experiment file: --config takes a Python file defining "
            "get_config() (e.g. experiments/reverse_attention.py); a saved config.json is read "
            "by s2s evaluate/decode --workdir."
        )
    spec = importlib.util.spec_from_file_location(f"s2s_experiment_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a broken experiment file: where and what, not a traceback
        raise ConfigError(_experiment_error(file, e)) from e
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{file} defines no get_config(); every experiment file must have one.")
    try:
        config = module.get_config(variant) if variant else module.get_config()
    except (AttributeError, KeyError) as e:  # a locked ConfigDict rejects unknown keys
        raise ConfigError(f"{file}: {e}. Valid keys: {', '.join(flat_keys(base_config()))}") from e
    except ConfigError as e:
        raise ConfigError(f"{file}: {e}") from e
    except Exception as e:
        raise ConfigError(_experiment_error(file, e)) from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{file}: get_config() must return an ml_collections.ConfigDict.")
    return config


def _experiment_error(file: Path, error: Exception) -> str:
    """``file:line: Type: message`` for an error raised while running an experiment file."""
    line = getattr(error, "lineno", None) if isinstance(error, SyntaxError) else None
    tb = error.__traceback__
    while tb is not None:  # the innermost frame inside the experiment file
        if Path(tb.tb_frame.f_code.co_filename) == file:
            line = tb.tb_lineno
        tb = tb.tb_next
    where = f"{file}:{line}" if line else str(file)
    text = str(error.msg if isinstance(error, SyntaxError) else error).splitlines()
    return f"{where}: {type(error).__name__}: {text[0] if text else ''} (S2S_DEBUG=1 shows more)"


def load_train_config(spec: str, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """The config of ``experiments/x.py[:variant]`` with ``--config.a.b=v`` overrides applied."""
    path, _, variant = spec.partition(":")
    config = load_experiment(path, variant)
    config = apply_overrides(config, parse_overrides(overrides))
    try:
        check_values(config)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return config


def _find_experiment(path: str | Path) -> Path:
    candidates = [Path(path), PACKAGE_ROOT / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    shipped = sorted(p.name for p in (PACKAGE_ROOT / "experiments").glob("*.py"))
    raise ConfigError(
        f"Experiment file {str(path)!r} not found. Shipped experiments (in experiments/): "
        f"{', '.join(shipped) or 'none'}."
    )


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Dotted names of every leaf, e.g. ``["model.hidden_size", ...]``."""
    keys = []
    for name, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(flat_keys(value, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def parse_overrides(args: Sequence[str]) -> list[tuple[str, str]]:
    """Splits ``--config.a.b=v`` (or ``--config.a.b v``) arguments into (key, raw value) pairs."""
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--config."):
            raise ConfigError(f"Unrecognised argument {arg!r}; overrides look like --config.a.b=v.")
        body = arg[len("--config.") :]
        if "=" in body:
            key, raw = body.split("=", 1)
        elif i + 1 < len(args):
            key, raw = body, args[i + 1]
            i += 1
        else:
            raise ConfigError(f"Override {arg!r} has no value; write --config.{body}=VALUE.")
        pairs.append((key, raw))
        i += 1
    return pairs


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[tuple[str, str]]
) -> ml_collections.ConfigDict:
    """Returns a copy of ``config`` with ``key=raw`` overrides applied, typed like the old value."""
    config = ml_collections.ConfigDict(config.to_dict())
    for side in MODEL_PARTS:  # a new type brings its own keys: switch before the rest
        for key, raw in overrides:
            if key == f"model.{side}.type" and raw != config.model[side].type:
                config.model[side] = model_part(side, raw)
    config.lock()
    valid = flat_keys(config)
    for key, raw in overrides:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"Unknown config key {key!r}.{hint} Valid keys: {', '.join(valid)}.")
        *parents, leaf = key.split(".")
        section = config
        for p in parents:
            section = section[p]
        section[leaf] = _coerce(key, raw, section[leaf])
    config.lock()
    return config


def _coerce(key: str, raw: str, old: Any) -> Any:
    if isinstance(old, bool):
        lowered = raw.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"{key} is a bool; got {raw!r} (use true or false).")
    if isinstance(old, int | float):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} is a number ({type(old).__name__}); got {raw!r}.")
        if isinstance(old, int) and not float(value).is_integer():
            raise ConfigError(f"{key} is an integer; got {raw!r}.")
        return type(old)(value)
    if isinstance(old, tuple | list):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError) as e:
            names = [part.strip() for part in raw.split(",")]
            if all(name.isidentifier() for name in names):  # bleu,chrf -> ("bleu", "chrf")
                return tuple(names)
            raise ConfigError(
                f"{key} is a tuple; got {raw!r} (write e.g. '(8,16)' or 'bleu,chrf')."
            ) from e
        return tuple(value) if isinstance(value, tuple | list) else (value,)
    return raw


def to_dict(config: ml_collections.ConfigDict) -> dict:
    """A JSON-safe plain dict of the config (tuples become lists)."""
    return json.loads(config.to_json())
