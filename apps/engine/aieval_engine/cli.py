"""`aieval`: run evaluations from the command line.

    aieval run SPEC.yaml [--json] [--no-prediction-cache]   run one evaluation on this machine
    aieval rescore SPEC.yaml --from RUN   score a finished run's predictions again (another scorer or judge)
    aieval check SPEC.yaml          validate a spec and its data without running it
    aieval demo [--limit N]         prepare the offline demo model and evaluate it on the demo data
    aieval datasets [--available]   list OpenCompass' built-in dataset configs
    aieval datasets list [--ready|--missing] [--configs]   built-in benchmarks, whether their data is here, how to get it
    aieval datasets import PATH     import an OpenCompass data package (.zip/.tar[.gz] or a folder)
    aieval datasets fetch NAME [--mirror URL]   download the data a benchmark or config needs (env AIEVAL_DATA_MIRROR)

Other packages add commands (the server adds `serve`, `submit`...) through the `aieval.commands` entry point
group: each entry point is a function taking the argparse subparsers object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .catalogue import list_builtin_names, missing_data, resolve_builtin
from .launchers import ColdLauncher
from .prediction_cache import cache_file as prediction_cache_file
from .results import EvalResult
from .runner import Evaluation, ProgressEvent
from .spec import EvalSpec, SpecError, load_spec

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_CANCELLED = 0, 1, 2, 130
# Each of these ends the run: cancel it (the whole OpenCompass process group) and exit with 128 + the signal's
# number, as a shell reports a command killed by it (Ctrl-C: 130). SIGKILL cannot be caught: the child notices
# that its parent is gone (launchers.stop_with_parent).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def default_data_dir() -> Path:
    return Path(os.environ.get("AIEVAL_DATA_DIR") or Path.home() / ".cache" / "aieval")


def compass_data_cache(data_dir: Path) -> Path:
    """Where OpenCompass looks for built-in datasets' files: `<cache>/data/<name>`."""
    return Path(os.environ.get("COMPASS_DATA_CACHE") or data_dir / "compass")


def judge_cache_file(data_dir: Path) -> Path:
    """Where the judge model's replies are kept between runs (judge.JudgeCallCache), as the server keeps its own."""
    return data_dir / "judge-cache.sqlite"


def _new_job_dir(data_dir: Path, name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)[:40] or "evaluation"
    return data_dir / "jobs" / f"{safe}-{stamp}"


def progress_columns() -> list:
    """The progress bar's columns; a task's fields: description, completed/total samples and `eta` (text)."""
    return [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}")]


def score_table(title: str, scores: list[tuple[str, str, str, float]]) -> Table:
    """Scores as (model, dataset, metric, value): one row per dataset and metric, one column per model."""
    table = Table(title=title)
    models = list(dict.fromkeys(model for model, _, _, _ in scores))
    rows = list(dict.fromkeys((dataset, metric) for _, dataset, metric, _ in scores))
    values = {(model, dataset, metric): value for model, dataset, metric, value in scores}
    table.add_column("dataset")
    table.add_column("metric")
    for model in models:
        table.add_column(model, justify="right")
    for dataset, metric in rows:
        cells = [values.get((m, dataset, metric)) for m in models]
        table.add_row(dataset, metric, *("-" if v is None else f"{v:.2f}" for v in cells))
    return table


def print_results(console: Console, result: EvalResult) -> None:
    console.print(score_table(f"Results ({result.status})",
                              [(s.model, s.dataset, s.metric, s.value) for s in result.scores]))
    if result.error:
        console.print(f"[red]{result.error}[/red]")
    if result.log_excerpt and not result.ok:
        console.print(result.log_excerpt, markup=False, highlight=False)
    console.print(f"Artifacts: {result.run_dir or result.job_dir}")


def run_spec(spec: EvalSpec, data_dir: Path, *, as_json: bool = False, job_dir: Path | None = None,
             resume: bool = False, console: Console | None = None, rescore_from: Path | None = None,
             launcher: ColdLauncher | None = None) -> int:
    console = console or Console(stderr=as_json)
    evaluation = Evaluation(
        spec,
        job_dir or _new_job_dir(data_dir, spec.name),
        data_cache=compass_data_cache(data_dir),
        launcher=launcher or ColdLauncher(),
        judge_cache=judge_cache_file(data_dir),
        prediction_cache=prediction_cache_file(data_dir),  # endpoint models' answers, as the server keeps its own
        rescore_from=rescore_from,
    )
    try:
        evaluation.prepare()
    except SpecError as exc:
        for problem in exc.problems:
            console.print(f"[red]error:[/red] {problem}", markup=True, highlight=False)
        return EXIT_INVALID

    received: list[int] = []

    def stop(signum: int, _frame) -> None:
        received.append(signum)
        evaluation.cancel()

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        with Progress(*progress_columns(), console=console, transient=False) as progress:
            bar = progress.add_task("starting OpenCompass", total=None, eta="")

            def on_event(event: ProgressEvent) -> None:
                if event.kind != "progress":
                    return
                description = f"{event.stage}: {event.pairs_done}/{event.pairs_total} tasks"
                eta = f"ETA {event.eta_s:.0f}s" if event.eta_s is not None else ""
                progress.update(bar, description=description, completed=event.samples_done,
                                total=event.samples_total, eta=eta)

            result = evaluation.run(on_event, resume=resume)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        print_results(console, result)
    if result.status in ("cancelled",):
        return 128 + received[0] if received else EXIT_CANCELLED
    return EXIT_OK if result.ok else EXIT_FAILED


def _cmd_run(args) -> int:
    return _run_spec_file(args, prediction_cache=args.prediction_cache, resume=args.resume)


def _cmd_rescore(args) -> int:
    return _run_spec_file(args, rescore_from=Path(args.source))


def _run_spec_file(args, prediction_cache: bool = True, **run_options) -> int:
    """`run` and `rescore`: the spec file `args.spec` run by a cold OpenCompass process started first, so that its
    imports (seconds) overlap reading the spec and writing the job."""
    launcher = ColdLauncher()
    launcher.prestart()
    try:
        console = Console(stderr=args.json)
        try:
            spec = load_spec(args.spec)
        except SpecError as exc:
            for problem in exc.problems:
                console.print(f"[red]error:[/red] {problem}", highlight=False)
            return EXIT_INVALID
        if not prediction_cache:  # --no-prediction-cache
            spec = spec.model_copy(update={"params": spec.params.model_copy(update={"prediction_cache": False})})
        return run_spec(spec, Path(args.data_dir), as_json=args.json, job_dir=Path(args.job_dir) if args.job_dir else None,
                        console=console, launcher=launcher, **run_options)
    finally:
        launcher.close()


def _cmd_check(args) -> int:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="aieval-check-") as scratch:
        try:
            spec = load_spec(args.spec)
            Evaluation(spec, Path(scratch), data_cache=compass_data_cache(Path(args.data_dir))).prepare()
        except SpecError as exc:
            for problem in exc.problems:
                console.print(f"[red]error:[/red] {problem}", highlight=False)
            return EXIT_INVALID
    console.print(f"[green]ok[/green]: {len(spec.models)} model(s) x {len(spec.datasets)} dataset(s), data present")
    return EXIT_OK


def _cmd_demo(args) -> int:
    from .demo import DemoModelUnavailable, demo_spec, prepare_demo_model

    console = Console()
    data_dir = Path(args.data_dir)
    try:
        with console.status("Preparing the demo model (first time only, about a minute)..."):
            prepare_demo_model(data_dir)
    except DemoModelUnavailable as exc:
        console.print(f"[red]error:[/red] {exc}")
        return EXIT_INVALID
    return run_spec(demo_spec(data_dir, limit=args.limit), data_dir, as_json=args.json, console=console)


def _cmd_datasets(args) -> int:
    cache = compass_data_cache(Path(args.data_dir))
    for name in list_builtin_names():
        if args.available:
            try:
                if missing_data(resolve_builtin(name), cache):
                    continue
            except ValueError:
                continue
        print(name)
    return EXIT_OK


def _cmd_datasets_list(args) -> int:
    from .catalogue import benchmarks

    cache = compass_data_cache(Path(args.data_dir))
    table = Table(title=f"Built-in benchmarks (data under {cache}/data)")
    for column in ("benchmark", "ready", "how to get the data"):
        table.add_column(column, overflow="fold")
    for benchmark in benchmarks(cache):
        if (args.ready and not benchmark.ready_configs) or (args.missing and benchmark.ready):
            continue
        table.add_row(benchmark.name, f"{benchmark.ready_configs}/{len(benchmark.configs)}", benchmark.how_to_get())
        if args.configs:
            for config in benchmark.configs:
                table.add_row(f"  {config.config.name}", "yes" if config.ready else "no",
                              ", ".join(str(p) for p in config.missing))
    Console().print(table)
    return EXIT_OK


def _print_import_report(console: Console, report) -> None:
    console.print(f"[green]imported[/green] {report.source}: {report.files} file(s), "
                  f"{report.bytes / 1024**2:.1f} MiB; {report.checksum}", highlight=False)
    console.print(f"  installed: {', '.join(report.installed) or '-'}"
                  + (f" (replaced: {', '.join(report.replaced)})" if report.replaced else ""), highlight=False)
    if report.benchmarks_ready:
        console.print(f"  benchmarks now ready: {', '.join(report.benchmarks_ready)} "
                      f"({len(report.became_ready)} config(s))", highlight=False)
    else:
        console.print("  no benchmark became ready (their data was already here, or the package holds other data)")


def _package_progress(progress: Progress, description: str):
    bar = progress.add_task(description, total=None, eta="")

    def update(stage: str, done: int, total: int) -> None:
        progress.update(bar, description=f"{description}: {stage}", completed=done // 1024**2,
                        total=(total // 1024**2 or None) if total else None, eta="MiB")
    return update


def _cmd_datasets_import(args) -> int:
    from .datapackages import PackageError, import_package

    console = Console()
    cache = compass_data_cache(Path(args.data_dir))
    try:
        with Progress(*progress_columns(), console=console, transient=True) as progress:
            report = import_package(Path(args.path), cache, expected_md5=args.md5,
                                    on_progress=_package_progress(progress, Path(args.path).name))
    except PackageError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return EXIT_INVALID
    _print_import_report(console, report)
    return EXIT_OK


def _cmd_datasets_fetch(args) -> int:
    from .catalogue import UnknownDatasetError
    from .datapackages import PackageError, fetch

    console = Console()
    cache = compass_data_cache(Path(args.data_dir))
    bars: dict[str, object] = {}
    try:
        with Progress(*progress_columns(), console=console, transient=True) as progress:
            def on_progress(package, stage: str, done: int, total: int) -> None:
                if package.url not in bars:
                    bars[package.url] = _package_progress(progress, package.archive_name)
                bars[package.url](stage, done, total)  # type: ignore[operator]

            report = fetch(args.name, cache, mirror=args.mirror, on_progress=on_progress)
    except (PackageError, UnknownDatasetError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return EXIT_INVALID
    for imported in report.imported:
        _print_import_report(console, imported)
    if not report.imported and report.already_present and not report.unpublished:
        console.print(f"the data of {args.name} is already here: nothing to download")
    for path in report.unpublished:
        console.print(f"[yellow]not published:[/yellow] OpenCompass has no archive for {path}; copy its files under "
                      f"{cache}/data/ (`aieval datasets import FOLDER`)", highlight=False)
    return EXIT_FAILED if report.unpublished and not report.imported else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aieval", description="Evaluate LLMs with OpenCompass.")
    parser.add_argument("--data-dir", default=str(default_data_dir()),
                        help="models, jobs and built-in data live here (env AIEVAL_DATA_DIR)")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the evaluation described by a spec file")
    run.add_argument("spec", help="YAML or JSON EvalSpec")
    run.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    run.add_argument("--job-dir", help="where to keep this run's files (default: a new folder in the data dir)")
    run.add_argument("--resume", action="store_true", help="reuse the predictions already in --job-dir")
    run.add_argument("--prediction-cache", action=argparse.BooleanOptionalAction, default=True,
                     help="answer requests an endpoint model was sent before from the data dir's prediction cache "
                          "(--no-prediction-cache: send every prompt; the spec's params.prediction_cache: false too)")
    run.set_defaults(handler=_cmd_run)

    rescore = commands.add_parser(
        "rescore", help="score a finished run's predictions again with the spec's scorers and judge, without inference")
    rescore.add_argument("spec", help="YAML or JSON EvalSpec: the same models and datasets as the finished run")
    rescore.add_argument("--from", dest="source", required=True, help="the finished run's job dir or run dir")
    rescore.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    rescore.add_argument("--job-dir", help="where to keep this re-score's files (default: a new folder in the data dir)")
    rescore.set_defaults(handler=_cmd_rescore)

    check = commands.add_parser("check", help="validate a spec and its data without running it")
    check.add_argument("spec")
    check.set_defaults(handler=_cmd_check)

    demo = commands.add_parser("demo", help="evaluate the offline demo model on the demo datasets")
    demo.add_argument("--limit", type=int, default=None, help="samples per dataset")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(handler=_cmd_demo)

    datasets = commands.add_parser("datasets", help="OpenCompass' built-in datasets: list them, import or fetch data")
    datasets.add_argument("--available", action="store_true", help="only those whose data is present")
    datasets.set_defaults(handler=_cmd_datasets)
    data_commands = datasets.add_subparsers(dest="datasets_command")
    data_list = data_commands.add_parser("list", help="built-in benchmarks, whether their data is here, how to get it")
    shown = data_list.add_mutually_exclusive_group()
    shown.add_argument("--ready", action="store_true", help="only benchmarks with at least one config ready")
    shown.add_argument("--missing", action="store_true", help="only benchmarks with data missing")
    data_list.add_argument("--configs", action="store_true", help="one line per config as well")
    data_list.set_defaults(handler=_cmd_datasets_list)
    data_import = data_commands.add_parser(
        "import", help="import an OpenCompass data package (.zip, .tar, .tar.gz) or a folder into COMPASS_DATA_CACHE")
    data_import.add_argument("path", help="OpenCompassData-core-*.zip, gsm8k.zip, ... or a folder with data/<name>/")
    data_import.add_argument("--md5", help="the archive's expected md5 (default: OpenCompass' published one, if any)")
    data_import.set_defaults(handler=_cmd_datasets_import)
    data_fetch = data_commands.add_parser("fetch", help="download and import the data a benchmark or config needs")
    data_fetch.add_argument("name", help="a benchmark (config folder, e.g. gsm8k) or a config (gsm8k_gen)")
    data_fetch.add_argument("--mirror", default=None,
                            help="base URL of a copy of OpenCompass' download server (env AIEVAL_DATA_MIRROR)")
    data_fetch.set_defaults(handler=_cmd_datasets_fetch)

    for entry in entry_points(group="aieval.commands"):
        # A broken plugin costs its own command, not `aieval run`: the engine must stay usable on its own.
        try:
            add_command = entry.load()
        except Exception as exc:
            print(f"aieval: the '{entry.name}' command is unavailable ({type(exc).__name__}: {exc})", file=sys.stderr)
            continue
        add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.data_dir = str(Path(args.data_dir).resolve())
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
