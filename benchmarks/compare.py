"""Runs workloads W1-W4 and W6 with s2s_jax and its peers in one process and prints one table.

    python benchmarks/compare.py                                   # full sizes, W1-W4
    python benchmarks/compare.py --workloads W6                    # file decoding, ~5 min
    python benchmarks/compare.py --workloads W1,W3 --rounds 5 --steps 4 --json out.json
    python benchmarks/compare.py --tiny --rounds 1 --steps 1       # smoke run, tiny shapes
    python benchmarks/compare.py --workloads W1,W2 --peak-rss      # + peak RSS per system

Workloads (/work/shared/bench/WORKLOADS.md): W1 LSTM attention training vs eager PyTorch; W2
Transformer training vs Hugging Face Marian; W3 beam-4 and greedy decoding of 32 tokens vs HF
``generate`` and CTranslate2 (float32, int8) on the same weights; W4 compile and step time of a
12+12-layer Transformer and of the W1 model over 512 source tokens, scanned vs unrolled; W6
end-to-end file decoding (read, tokenize, beam-4 decode, detokenize, write) vs CTranslate2
float32 and int8 running the same model exported by ``s2s_jax.export``.

Systems of a workload alternate: after ``--warmup`` untimed calls each, every round runs
``--steps`` timed calls of each system in turn (W3, W4 and W6: one call per system per round, so
W3 gives the median of ``--rounds`` decodes, W6 of ``--rounds`` files). Figures are medians;
s2s_jax's compile time is measured ahead of time and reported on its own row (the peers run
eagerly: no compile step).
A peer whose packages are missing is skipped with one line. ``--peak-rss`` adds, after the
timing, a "peak_rss" row per W1/W2 system, each measured in a child process of its own
(``benchmarks/peak_rss.py``). Ratios and the ceiling column are defined in
``benchmarks/report.py``; targets print PASS / MISS / SKIP after the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import resource
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root holds `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax
import numpy as np

from benchmarks import peak_rss, peers, report, s2s_side, training_systems, workloads
from benchmarks.harness import System, alternate
from s2s_jax import host_memory
from s2s_jax.data.batching import auto_buckets, encode_examples, pad_batch
from s2s_jax.data.vocab import SPECIAL_TOKENS, CharVocab
from s2s_jax.decoding.generate import DecodeConfig, jit_generate
from s2s_jax.profiling import compile_step, measure_matmul_flops
from s2s_jax.run.run_info import git_revision, package_versions

WORKLOADS = ("W1", "W2", "W3", "W4", "W6")
# W6 (~5 min at full size) runs when asked for: --workloads W6.
DEFAULT_WORKLOADS = ("W1", "W2", "W3", "W4")
PEER_PACKAGES = ("torch", "transformers", "ctranslate2")
W4_EXTRA = ("step", "memory")


@dataclasses.dataclass
class Context:
    """Settings of one run and what it has skipped so far."""

    tiny: bool
    rounds: int
    steps: int
    warmup: int
    full_unroll: bool
    ceiling: float
    workdir: str
    skipped: list[str] = dataclasses.field(default_factory=list)

    @property
    def sizes(self) -> workloads.Sizes:
        return workloads.sizes(self.tiny)

    def peer_ok(self, peer: str) -> bool:
        """True if the peer's packages are installed; otherwise prints and records a skip."""
        absent = peers.missing(peer)
        if absent:
            message = peers.skip_message(peer, absent)
            if message not in self.skipped:
                print(message, flush=True)
                self.skipped.append(message)
        return not absent

    def measure(
        self, systems: list[System], *, per_round: int, warmup: int, extra: tuple[str, ...] = ()
    ) -> list[report.Row]:
        """Alternates the systems of one workload; returns their rows (``extra``: see report)."""
        print(f"timing {systems[0].workload}: {', '.join(s.name for s in systems)}", flush=True)
        times = alternate(systems, rounds=self.rounds, per_round=per_round, warmup=warmup)
        rows = []
        for system in systems:
            rows += report.system_rows(system, times[system.name], self.ceiling, extra)
        return rows


def _run_training(ctx: Context, workload: str, extra: tuple[str, ...] = ()) -> list[report.Row]:
    """Builds the systems of a training workload (peers whose packages are in) and times them."""
    batches = training_systems.batches(workload, ctx.tiny)
    systems = [
        entry.build(ctx.tiny, batches)
        for entry in training_systems.SYSTEMS[workload].values()
        if entry.peer is None or ctx.peer_ok(entry.peer)
    ]
    for system in systems:
        if system.peer:  # same maths: credited with s2s_jax's (the first system's) FLOP count
            system.flops_per_call = systems[0].flops_per_call
    return ctx.measure(systems, per_round=ctx.steps, warmup=ctx.warmup, extra=extra)


def run_w1(ctx: Context) -> list[report.Row]:
    """W1: s2s_jax's LSTM attention train step vs the same model in eager PyTorch."""
    return _run_training(ctx, "W1", extra=("memory",))


def run_w2(ctx: Context) -> list[report.Row]:
    """W2: s2s_jax's post-LN (and pre-LN) Transformer train step vs HF MarianMTModel."""
    return _run_training(ctx, "W2")


def _w3_model(ctx: Context, config):
    """``(s2s model, params, hf_model or None)``: the same weights for every system if HF is in."""
    if not ctx.peer_ok("hf_marian"):
        model, params = s2s_side.random_transformer(config, ctx.sizes.vocab, config.seed)
        return model, params, None
    from benchmarks.peers import hf_marian
    from s2s_jax.models.marian import from_marian
    from s2s_jax.models.registry import pair

    hf_model = hf_marian.build_model(config.model, ctx.sizes.vocab, config.seed).eval()
    pair_config, params = from_marian(hf_model)
    return pair(pair_config), params, hf_model


def run_w3(ctx: Context) -> list[report.Row]:
    """W3: beam and greedy decoding of exactly ``gen_len`` tokens, s2s_jax vs HF and CT2."""
    sz = ctx.sizes
    config = workloads.w2_config(ctx.tiny)
    batch = workloads.synthetic_batches(
        batch=sz.decode_batch, src_len=sz.decode_src_len, tgt_len=1, vocab=sz.vocab, count=1,
        seed=config.seed,
    )[0]  # fmt: skip
    inputs, inputs_mask = batch["inputs"], batch["inputs_mask"]
    model, params, hf_model = _w3_model(ctx, config)
    ct2_dir = None
    if ctx.peer_ok("ct2") and hf_model is not None:  # ct2 needs transformers too
        from benchmarks.peers import ct2

        ct2_dir = ct2.convert(hf_model, Path(ctx.workdir) / "ct2_marian")
    rows = []
    for label, beam in (("W3 beam", sz.beam), ("W3 greedy", 1)):
        kw = dict(beam_size=beam, length=sz.gen_len)
        systems = [
            s2s_side.decode_system(label, "s2s_jax", model, params, inputs, inputs_mask, **kw)
        ]
        if hf_model is not None:
            from benchmarks.peers import hf_marian

            systems.append(hf_marian.generate_system(label, hf_model, inputs, **kw))
        if ct2_dir is not None:
            from benchmarks.peers import ct2

            for compute_type in ct2.COMPUTE_TYPES:
                systems.append(
                    ct2.decode_system(label, ct2_dir, compute_type, sz.vocab, inputs, **kw)
                )
        rows += ctx.measure(systems, per_round=1, warmup=1)
    return rows


def _variant(workload: str, name: str, config, vocab, batches, *, reference: bool) -> System:
    print(f"compiling {workload}: {name}", flush=True)
    system = s2s_side.train_system(workload, name, config, vocab, batches)
    system.peer = reference  # the unrolled variants are what the scans are compared with
    return system


def run_w4(ctx: Context) -> list[report.Row]:
    """W4: compile and step time, scanned vs unrolled (deep Transformer, LSTM over 512 tokens)."""
    sz, vocab = ctx.sizes, ctx.sizes.vocab
    deep = s2s_side.with_model(workloads.w2_config(ctx.tiny), num_layers=sz.deep_layers)
    label = "W4 transformer"
    batches = workloads.training_batches(deep, vocab, count=2)
    systems = [
        _variant(label, "s2s_jax scanned", deep, vocab, batches, reference=False),
        _variant(label, "s2s_jax unrolled", s2s_side.with_model(deep, scan_layers=False), vocab,
                 batches, reference=True),
    ]  # fmt: skip
    rows = ctx.measure(systems, per_round=1, warmup=1, extra=W4_EXTRA)
    lstm = workloads.w1_config(ctx.tiny)
    label = "W4 lstm"
    batches = workloads.training_batches(lstm, vocab, src_len=sz.long_src_len, count=2)
    unrolls = [sz.partial_unroll] + ([sz.long_src_len] if ctx.full_unroll else [])
    systems = [_variant(label, "s2s_jax scanned", lstm, vocab, batches, reference=False)]
    for unroll in unrolls:
        name = "s2s_jax unrolled" if unroll == sz.long_src_len else f"s2s_jax unroll {unroll}"
        config = s2s_side.with_model(lstm, unroll=unroll)
        systems.append(_variant(label, name, config, vocab, batches, reference=True))
    return rows + ctx.measure(systems, per_round=1, warmup=1, extra=W4_EXTRA)


def measure_peak_rss(ctx: Context, names: list[str]) -> list[report.Row]:
    """Peak RSS rows of the training workloads among ``names``: one child process per system.

    The children run one after another (never beside the timing); a child that fails is
    reported with its stderr tail and recorded in ``ctx.skipped``, and the run goes on.
    """
    rows = []
    untrained = [name for name in names if name not in training_systems.SYSTEMS]
    if untrained:
        print(f"peak RSS: not measured for {', '.join(untrained)} (W1 and W2 only)", flush=True)
    for workload in [name for name in names if name in training_systems.SYSTEMS]:
        for system, entry in training_systems.SYSTEMS[workload].items():
            if entry.peer is not None and not ctx.peer_ok(entry.peer):
                continue
            print(f"peak RSS {workload}: {system} in its own process", flush=True)
            try:
                result = peak_rss.run_child(
                    workload, system, tiny=ctx.tiny, steps=ctx.warmup + ctx.steps
                )
            except peak_rss.ChildError as err:
                print(err, flush=True)
                ctx.skipped.append(str(err))
                continue
            rows.append(peak_rss.row(result))
    return rows


@dataclasses.dataclass(frozen=True)
class W6Sizes:
    """W6 sizes (the vocabulary is ``workloads.sizes``'s, the model W2's).

    Attributes:
      sentences: source lines in the file.
      min_len, max_len: source length range in characters (= tokens), drawn uniformly.
      gen_len: generated tokens per line, EOS blocked until then (every system, the same work).
      batch: rows per decode call of the full-batch variant and of CTranslate2 (``s2s decode``
        takes ``inference.DECODE_BATCH``, 32).
      beam: beam width.
    """

    sentences: int
    min_len: int
    max_len: int
    gen_len: int
    batch: int
    beam: int = 4


W6_SIZES = {False: W6Sizes(256, 8, 48, 32, 32), True: W6Sizes(6, 3, 7, 8, 4)}
W6_LABEL = "W6 file beam"
W6_TARGETS = (report.Target(W6_LABEL, "s2s_jax", "ct2_float32", "throughput", 1.0),)
CJK = 0x4E00  # W6's characters: one per id, from the CJK block (no whitespace, no specials)


def w6_source(vocab: CharVocab, sizes: W6Sizes, seed: int) -> list[str]:
    """W6's source lines: random characters of ``vocab``, lengths uniform in the range."""
    rng = np.random.default_rng([seed, workloads.DATA_SEED])
    lengths = rng.integers(sizes.min_len, sizes.max_len + 1, size=sizes.sentences)
    return ["".join(rng.choice(list(vocab.chars), n)) for n in lengths]


def w6_decode_config(sizes: W6Sizes) -> DecodeConfig:
    """Beam search of exactly ``sizes.gen_len`` steps (EOS blocked until then, forced there)."""
    return DecodeConfig(
        method="beam", beam_size=sizes.beam, max_length_ratio=0.0,
        max_length_offset=sizes.gen_len, min_length=sizes.gen_len - 1,
    )  # fmt: skip


def _w6_stream_system(model, params, vocab, source: Path, output: Path, sizes: W6Sizes) -> System:
    """``s2s decode --input source --output output``'s path: ``decode_file.decode_stream`` with
    an ``inference.Translator`` (windows of lines sorted by length, ``DECODE_BATCH`` rows per
    call, each padded to its bucket width; programs compiled on the warm-up call)."""
    from s2s_jax.run import decode_file
    from s2s_jax.run.inference import DECODE_BATCH, Translator

    buckets = auto_buckets(sizes.max_len + 1)  # + EOS
    # The fields a Translator reads of a run's components (this model has no run).
    data = types.SimpleNamespace(src_vocab=vocab, tgt_vocab=vocab, buckets=buckets)
    components = types.SimpleNamespace(
        model=model, model_config=model.config, decode_config=w6_decode_config(sizes), data=data
    )
    translator = Translator.from_components(components, params)
    options = decode_file.Options(progress=False)
    lines = source.read_text(encoding="utf-8").splitlines()

    def run_once() -> None:
        with open(source, "rb") as src, open(output, "w", encoding="utf-8") as out:
            decode_file.decode_stream(translator, src, out, options, err=io.StringIO())

    return System(
        workload=W6_LABEL, name="s2s_jax", run_once=run_once,
        work_per_call=float(len(lines) * sizes.gen_len),
        note=f"s2s decode: windows of {options.window} sorted by length, {DECODE_BATCH} rows a "
        f"call, buckets {buckets}",
    )  # fmt: skip


def full_batches(encoded, batch: int, buckets: tuple[int, ...]) -> list[dict]:
    """``eval_batches``'s batch dicts, but of the lines sorted by length cut into full batches,
    each padded to the smallest bucket that holds its longest line (as CTranslate2 batches)."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    out = []
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        width = min(b for b in buckets if b >= len(encoded[rows[-1]][0]))
        padded = pad_batch([encoded[i] for i in rows], (width, 1))
        inputs = np.zeros((batch, width), np.int32)
        mask = np.zeros((batch, width), bool)
        inputs[: len(rows)], mask[: len(rows)] = padded["inputs"], padded["inputs_mask"]
        index = np.full(batch, -1, np.int32)
        index[: len(rows)] = rows
        out.append({"inputs": inputs, "inputs_mask": mask, "index": index})
    return out


def _w6_full_batch_system(
    model, params, vocab, source: Path, output: Path, sizes: W6Sizes
) -> System:
    """The same decoding with every batch full (``full_batches``), programs compiled ahead of
    time: what ``s2s decode`` would gain by not splitting a window's batches at bucket edges."""
    buckets = auto_buckets(sizes.max_len + 1)
    model, params = model.for_decoding(params)
    params = jax.device_put(params)
    generate, compiled, seconds = jit_generate(model, w6_decode_config(sizes)), {}, 0.0
    for width in buckets:
        ids = jax.ShapeDtypeStruct((sizes.batch, width), np.int32)
        mask = jax.ShapeDtypeStruct((sizes.batch, width), np.bool_)
        compiled[width], took = compile_step(generate, params, ids, mask)
        seconds += took
    lines = source.read_text(encoding="utf-8").splitlines()

    def run_once() -> None:
        text = source.read_text(encoding="utf-8").splitlines()
        encoded = encode_examples([{"inputs": t, "targets": ""} for t in text], vocab, vocab)
        out = [""] * len(text)
        for batch in full_batches(encoded, sizes.batch, buckets):
            decode = compiled[batch["inputs"].shape[1]]
            sequences = np.asarray(decode(params, batch["inputs"], batch["inputs_mask"]).sequences)
            for row, index in enumerate(batch["index"].tolist()):
                if index >= 0:
                    out[index] = vocab.decode(sequences[row, 0])
        output.write_text("".join(line + "\n" for line in out), encoding="utf-8")

    return System(
        workload=W6_LABEL, name="s2s_jax full batches", run_once=run_once,
        work_per_call=float(len(lines) * sizes.gen_len), compile_seconds=seconds,
        note=f"lines sorted by length, full batches of {sizes.batch}, buckets {buckets}",
    )  # fmt: skip


def run_w6(ctx: Context) -> list[report.Row]:
    """W6: a file of source lines translated end to end, s2s_jax vs CTranslate2 on its export.

    The W2 model with Marian's LayerNorm epsilon (so that it exports), random weights, and a
    character vocabulary of W2's size; the CTranslate2 model is ``s2s_jax.export``'s (to_marian,
    then ``export/ct2.py``), the same weights and the same tokenizer (``source.spm``).
    """
    sizes = W6_SIZES[ctx.tiny]
    vocab = CharVocab("".join(chr(CJK + i) for i in range(ctx.sizes.vocab - len(SPECIAL_TOKENS))))
    config = s2s_side.with_model(workloads.w2_config(ctx.tiny), norm_epsilon=1e-5)
    model, params = s2s_side.random_transformer(config, vocab.size, config.seed)
    work = Path(ctx.workdir)
    source = work / "w6_source.txt"
    lines = w6_source(vocab, sizes, config.seed)
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    print(f"compiling {W6_LABEL}: s2s_jax full batches", flush=True)
    args = (model, params, vocab, source)
    systems = [
        _w6_stream_system(*args, work / "w6_s2s_jax.txt", sizes),
        _w6_full_batch_system(*args, work / "w6_s2s_jax_full.txt", sizes),
    ]
    if ctx.peer_ok("ct2"):
        from benchmarks.peers import ct2
        from s2s_jax.export import ct2 as export_ct2
        from s2s_jax.export.marian import save_marian

        (work / "w6_hf").mkdir()
        save_marian(work / "w6_hf", model.config, params, vocab, vocab)
        model_dir = export_ct2.convert(work / "w6_hf", work / "w6_ct2")
        kw = dict(beam_size=sizes.beam, length=sizes.gen_len, max_batch_size=sizes.batch)
        for compute_type in ct2.COMPUTE_TYPES:
            output = work / f"w6_{compute_type}.txt"
            systems.append(
                ct2.file_decode_system(W6_LABEL, model_dir, compute_type, source, output, **kw)
            )
    return ctx.measure(systems, per_round=1, warmup=1)


RUNNERS: dict[str, Callable[[Context], list[report.Row]]] = {
    "W1": run_w1,
    "W2": run_w2,
    "W3": run_w3,
    "W4": run_w4,
    "W6": run_w6,
}


def machine_ceiling(tiny: bool) -> tuple[float, str]:
    """Matmul ceiling in FLOP/s: f32 2048^3 on a CPU, bf16 8192^3 on an accelerator."""
    on_cpu = jax.default_backend() == "cpu"
    size = (256 if tiny else 2048) if on_cpu else (1024 if tiny else 8192)
    dtype = "float32" if on_cpu else "bfloat16"
    repeats = 3 if tiny else 20
    flops = measure_matmul_flops(size, repeats, dtype=dtype)
    device = jax.devices()[0].device_kind
    return flops, f"{dtype} {size}^3 jnp.dot under jit, median of {repeats}, {device}"


def parse_workloads(text: str) -> list[str]:
    """``"W1,W3"`` -> ``["W1", "W3"]``, rejecting unknown names."""
    names = [part.strip().upper() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in RUNNERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"Unknown workloads {unknown or text!r}; choose from {', '.join(WORKLOADS)}."
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--workloads",
        type=parse_workloads,
        default=list(DEFAULT_WORKLOADS),
        help="comma-separated subset of W1,W2,W3,W4,W6 (default: W1-W4)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternation rounds (default 5)")
    parser.add_argument(
        "--steps", type=int, default=4, help="timed training steps per system per round (default 4)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="untimed training steps per system before timing (default 2)",
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (smoke runs, tests)")
    parser.add_argument(
        "--full-unroll",
        action="store_true",
        help="W4: also fully unroll the LSTM over 512 steps (compiles for minutes)",
    )
    parser.add_argument(
        "--peak-rss",
        action="store_true",
        help="after the timing, also measure each W1/W2 system's peak RSS in its own process",
    )
    return parser  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    """Runs the selected workloads; prints the table and targets; returns the JSON payload."""
    args = build_parser().parse_args(argv)
    # Before JAX starts; in this one process the peers run with the same malloc settings.
    try:
        malloc = host_memory.configure()
    except ValueError as err:
        raise SystemExit(str(err)) from None
    if args.rounds < 1 or args.steps < 1 or args.warmup < 0:
        raise SystemExit("--rounds and --steps must be >= 1 and --warmup >= 0.")
    # A persistent compilation cache (JAX_COMPILATION_CACHE_DIR) would turn compiles into reads.
    jax.config.update("jax_enable_compilation_cache", False)
    ceiling, ceiling_source = machine_ceiling(args.tiny)
    print(f"machine ceiling: {ceiling / 1e9:.1f} GFLOP/s ({ceiling_source})", flush=True)
    print(f"host malloc ({host_memory.ENV}, every system): {malloc}", flush=True)
    rows: list[report.Row] = []
    with tempfile.TemporaryDirectory(prefix="s2s_bench_") as workdir:
        ctx = Context(args.tiny, args.rounds, args.steps, args.warmup, args.full_unroll,
                      ceiling, workdir)  # fmt: skip
        for name in args.workloads:
            rows += RUNNERS[name](ctx)
        if args.peak_rss:
            rows += measure_peak_rss(ctx, args.workloads)
    rows = report.add_ratios(rows)
    targets = report.check_targets(
        rows, report.TARGETS + (W6_TARGETS if "W6" in args.workloads else ())
    )
    print()
    print(report.format_table(rows))
    print(report.LEGEND)
    if args.peak_rss:
        print(peak_rss.SOURCE)
    print()
    print(report.format_targets(targets))
    process_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(f"\nprocess peak RSS {process_rss / 2**20:.0f} MiB (all systems of the run together)")
    info = {
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "machine": {
            "ceiling_flops_per_sec": ceiling, "ceiling_source": ceiling_source,
            "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
            "process_peak_rss_bytes": process_rss, "host_malloc": malloc,
        },
        "skipped": ctx.skipped,
        "git_revision": git_revision(),
        "packages": package_versions() | package_versions(PEER_PACKAGES),
    }  # fmt: skip
    if args.peak_rss:
        info["peak_rss_source"] = peak_rss.SOURCE
    if args.json:
        report.write_json(args.json, rows, targets, **info)
        print(f"wrote {args.json}")
    return {**info, "rows": rows, "targets": targets}


if __name__ == "__main__":
    main()
