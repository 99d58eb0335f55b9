"""The benchmarks' command line: ``emca bench attention | generator | lightning | cpu-training |
gpu-report``."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from emca.allocator import retain_freed_memory
from emca.bench.attention import BACKENDS, DTYPES, SHAPES, run_attention_benchmark
from emca.bench.gpu_report import gpu_report, run_generator_benchmark
from emca.bench.training import CPU_VARIANTS, lightning_overhead, training_variants
from emca.cli import user_errors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="emca bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    attention = sub.add_parser("attention", help="time reference, sdpa, chunked and fused cross-attention")
    attention.add_argument("--dtype", choices=list(DTYPES), default="float32")
    attention.add_argument("--repetitions", type=int, default=None, help="timed calls (default 20 GPU, 3 CPU)")
    attention.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 5 GPU, 1 CPU)")
    attention.add_argument("--backends", default=",".join(BACKENDS), help=f"subset of {','.join(BACKENDS)}")
    attention.add_argument("--shapes", default=",".join(SHAPES), help=f"subset of {','.join(SHAPES)}")
    attention.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    attention.add_argument("--output", type=Path, default=Path("bench-attention.json"), help="JSON results file")
    report = sub.add_parser("gpu-report", help="the GPU tests and every speed / memory figure, in one report")
    report.add_argument("--out", type=Path, default=Path("gpu-report"), help="folder for report.json and report.md")
    report.add_argument("--smoke", action="store_true", help="tiny shapes and small models, any device (CPU check)")
    report.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    generator = sub.add_parser("generator", help="forward+backward time and activation memory of a full generator")
    generator.add_argument("--experiment", default="xinggan_market", help="conf/experiment preset (model and size)")
    generator.add_argument("--batch", type=int, default=4)
    generator.add_argument("--size", default=None, help="HEIGHTxWIDTH overriding the preset's image size, e.g. 512x352")
    generator.add_argument("--backends", default="reference,chunked", help="subset of reference,sdpa,chunked,fused")
    generator.add_argument(
        "--precision",
        choices=("32-true", "bf16-mixed"),
        default="32-true",
        help="fp32, or bf16 autocast (on a CPU: fast where it computes bf16 natively)",
    )
    generator.add_argument("--repetitions", type=int, default=3)
    generator.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    overhead = sub.add_parser("lightning", help="seconds per iteration under Lightning against a bare loop")
    overhead.add_argument("overrides", nargs="*", help="conf/ overrides (default: the embedded default)")
    overhead.add_argument("--iterations", type=int, default=30)
    overhead.add_argument("--rounds", type=int, default=2)
    variants = sub.add_parser("cpu-training", help="seconds per training iteration of CPU variants, alternated")
    variants.add_argument("overrides", nargs="*", help="conf/ overrides (default: the embedded default)")
    variants.add_argument("--variants", default=",".join(CPU_VARIANTS), help=f"subset of {','.join(CPU_VARIANTS)}")
    variants.add_argument("--iterations", type=int, default=20, help="timed iterations per round")
    variants.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.command in ("lightning", "cpu-training"):
        retain_freed_memory()  # as emca train does by default, so the loops are timed as they train
    with user_errors():
        if args.command == "attention":
            run_attention_benchmark(args)
        elif args.command == "generator":
            run_generator_benchmark(args)
        elif args.command == "lightning":
            result = lightning_overhead(args.overrides, args.iterations, args.rounds)
            print(
                f"{torch.get_num_threads()} threads, {result['precision']}: Lightning {result['lightning_s']:.3f} "
                f"s/iteration, bare loop {result['bare_s']:.3f} s/iteration (medians of {args.rounds} alternating "
                f"rounds): overhead {100 * result['overhead']:+.1f} %"
            )
        elif args.command == "cpu-training":
            names = [name.strip() for name in args.variants.split(",")]
            unknown = sorted(set(names) - set(CPU_VARIANTS))
            if unknown:
                parser.error(f"--variants: unknown {', '.join(unknown)}; expected some of {', '.join(CPU_VARIANTS)}")
            results = training_variants(args.overrides, names, args.iterations, args.rounds)
            print(f"{torch.get_num_threads()} threads by default; medians of {args.rounds} alternating rounds")
            for name, result in results.items():
                print(
                    f"  {name:14s} {result['s_per_iteration']:.3f} s/iteration  x{result['speedup']:.2f}  "
                    f"(first 2 iterations {result['warmup_s']:.1f} s)"
                )
        else:
            paths = gpu_report(args.out, smoke=args.smoke, device_name=args.device)
            print(f"wrote {paths['json']} and {paths['md']}")


if __name__ == "__main__":
    main()
