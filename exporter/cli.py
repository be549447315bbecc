"""Command line: `python -m exporter {export,audit,inspect,parity,deploy}`. No logic lives here.

Exit codes: 0 success, 1 a check failed (audit error, freeze proof, conversion, onnx.checker,
the ONNX Runtime load, the checkpoint read-back, parity) or an unexpected internal error, 2 bad
usage (bad arguments or inputs, a model that cannot be loaded, a corrupt or unreadable file, an
unwritable or full output). Every failure ends with one `error:`
line; `--debug` prints the traceback before it. Flags are dash style (`--custom-objects`);
the underscore spelling (`--custom_objects`, as TF Serving's flags are written) is accepted
too. TensorFlow is imported only once a command runs, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from exporter.deploy.cli import add_deploy_parser, deploy_options
from exporter.options import (
    ExportOptions,
    ParityOptions,
    add_flags,
    check_model_name,
    from_args,
)

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention


class _Parser(argparse.ArgumentParser):
    """argparse ending usage errors with one `error:` line, taking `--a_b` for `--a-b` (and
    the reverse, for a flag defined with TF Serving's underscores)."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        tokens = list(sys.argv[1:] if args is None else args)
        known = self._option_string_actions  # every option string this parser defines
        for i, token in enumerate(tokens):
            if token == "--":
                break
            flag, sep, value = token.partition("=")
            if not flag.startswith("--") or flag in known:
                continue
            for spelling in ("--" + flag[2:].replace("_", "-"), "--" + flag[2:].replace("-", "_")):
                if spelling in known:
                    tokens[i] = spelling + sep + value
        return super().parse_known_args(tokens, namespace)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


PROG = "python -m exporter"  # `frozen-scalars` when run as the console script

# The last lines of each --help: a command a user can adapt.
_EXAMPLES = {
    "": "examples:\n"
    "  {prog} audit --model my_model.keras\n"
    "  {prog} export --model my_model.keras --name my_model --out artifacts\n"
    "  {prog} inspect artifacts/tfserving/my_model/1",
    "export": "example:\n"
    "  {prog} export --model my_model.keras --name my_model --out artifacts \\\n"
    "      --inputs my_inputs.npz   # np.savez('my_inputs.npz', features=array)",
    "audit": "example:\n  {prog} audit --model my_model.keras --custom-objects my_layers.py",
    "inspect": "example:\n  {prog} inspect artifacts/tfserving/my_model/1 --json",
    "parity": "example:\n"
    "  {prog} parity --export artifacts --model-name my_model --model my_model.keras \\\n"
    "      --target localhost:8500 --rest-target localhost:8501",
    "deploy": "example:\n"
    "  {prog} deploy --out artifacts --name my_model --storage-uri s3://bucket/artifacts",
}


class _PrintVersions(argparse.Action):
    """`--version`: this package and the ones that shape an export, without importing them."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        from exporter.report import package_versions

        lines = [f"frozen-scalars {package_versions(('frozen-scalars',))['frozen-scalars']}"]
        lines += [
            f"{name} {version or '(not installed)'}" for name, version in package_versions().items()
        ]
        print("\n".join(lines))
        parser.exit(EXIT_OK)


def _with_examples(parser: argparse.ArgumentParser, sub: Any, prog: str) -> None:
    """Every --help ends with an example (argparse keeps the epilog's line breaks)."""
    for name, text in _EXAMPLES.items():
        target = sub.choices[name] if name else parser
        target.formatter_class = argparse.RawDescriptionHelpFormatter
        target.epilog = text.format(prog=prog)


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,  # so a subcommand's default cannot reset the main flag
        help="print the traceback of a failure",
    )
    parser = _Parser(
        prog=prog,
        description="Audit, freeze and export Keras models with trained scalars.",
        parents=[debug],
    )
    parser.add_argument(
        "--version", action=_PrintVersions, nargs=0, help="print the versions and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add_model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model",
            required=True,
            help=".keras / .h5 file, Keras 2 SavedModel dir, or FILE.py:factory / "
            "package.module:factory",
        )
        p.add_argument(
            "--custom-objects",
            action="append",
            default=[],
            metavar="PY_OR_MODULE",
            help="module or .py file defining custom layers (repeatable)",
        )
        p.add_argument(
            "--allow-unsafe-deserialization",
            action="store_true",
            help="load .keras files holding Lambda bytecode (trusted files only)",
        )

    export = sub.add_parser(
        "export", parents=[debug], help="freeze and export SavedModel + ONNX, prove parity"
    )
    add_model_args(export)
    export.add_argument("--name", required=True, help="model name (TF Serving MODEL_NAME)")
    export.add_argument("--out", required=True, help="output root, e.g. artifacts")
    add_flags(export, ExportOptions)
    export.add_argument(
        "--quiet", action="store_true", help="no progress output (stages, weights written)"
    )
    export.add_argument(
        "--inputs",
        action="append",
        default=[],
        metavar="NPZ",
        help="extra parity inputs: .npz keyed by input name (repeatable)",
    )

    audit = sub.add_parser(
        "audit", parents=[debug], help="classify the model's scalars; exit 1 on an error"
    )
    add_model_args(audit)
    audit.add_argument("--json", action="store_true", help="print JSON instead of a table")

    inspect = sub.add_parser(
        "inspect", parents=[debug], help="is a SavedModel / ONNX file frozen? what scalars?"
    )
    inspect.add_argument("path", help="SavedModel directory or .onnx file")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")

    parity = sub.add_parser(
        "parity",
        parents=[debug],
        help="prove a published export agrees across Keras, ORT, gRPC and REST",
    )
    parity.add_argument("--export", required=True, type=Path, help="the exporter's OUT directory")
    parity.add_argument("--model-name", required=True, help="the exported model's name")
    add_flags(parity, ParityOptions)
    parity.add_argument("--json", type=Path, help="write the report here")

    add_deploy_parser(sub)
    _with_examples(parser, sub, prog)
    return parser


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _load(args: argparse.Namespace) -> Any:
    from exporter.model.loading import load_model

    return load_model(
        args.model,
        args.custom_objects,
        allow_unsafe_deserialization=args.allow_unsafe_deserialization,
    )


def _import_tensorflow() -> None:
    """Import TensorFlow once its command is known to run, without its CPU start-up noise."""
    from exporter.progress import import_tensorflow_quietly

    import_tensorflow_quietly()


def _run_export(args: argparse.Namespace) -> int:
    from exporter.progress import ExportProgress

    progress = ExportProgress(quiet=args.quiet)
    options = from_args(  # every flag checked before TensorFlow is imported
        ExportOptions, args, progress=progress.stage, weights_progress=progress.weights
    )
    check_model_name(args.name)
    _import_tensorflow()
    from exporter import export_model
    from exporter.model.trace import input_signature_from_model
    from exporter.verify.sample_inputs import conform_inputs, load_inputs

    if options.onnx_only:
        _stderr(
            "note: --onnx-only is no longer needed for models past 2 GiB (large tensors now "
            "stay read-only variables in the SavedModel's variables/); it only skips the "
            "SavedModel."
        )
    files = {path: load_inputs(path) for path in args.inputs}
    model = _load(args)
    if files:  # checked against the signature before anything is traced or written
        specs = input_signature_from_model(model)[0]
        files = {p: conform_inputs(b, specs, source=f"--inputs {p}") for p, b in files.items()}
    options = dataclasses.replace(options, parity_inputs=list(files.values()))
    report = export_model(model, args.out, args.name, options)
    print("\n" + report.summary())
    for warning in report.warnings:
        _stderr(f"warning: {warning}")
    return EXIT_OK


def _run_audit(args: argparse.Namespace) -> int:
    _import_tensorflow()
    from exporter import audit_model

    audit = audit_model(_load(args))
    print(json.dumps(audit.to_dict(), indent=2) if args.json else audit.table())
    return EXIT_CHECK_FAILED if audit.has_errors else EXIT_OK


def _run_inspect(args: argparse.Namespace) -> int:
    _import_tensorflow()
    from exporter.inspect import inspect_artifact

    result = inspect_artifact(args.path)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.text())
    return EXIT_OK


def _run_parity(args: argparse.Namespace) -> int:
    from_args(ParityOptions, args)  # every flag checked before TensorFlow is imported
    _import_tensorflow()
    from exporter.verify.served_parity import run_command

    report = run_command(args, progress=lambda msg: _stderr(f"[parity] {msg}"))
    return EXIT_OK if report.passed else EXIT_CHECK_FAILED


def _run_deploy(args: argparse.Namespace) -> int:
    _import_tensorflow()
    from exporter.deploy.write import deploy

    paths = deploy(
        args.out,
        args.name,
        version=args.version,
        options=deploy_options(args),
        note=lambda message: _stderr(f"note: {message}"),
    )
    for path in paths:
        print(path)
    return EXIT_OK


def _exit_code_and_message(exc: Exception) -> tuple[int, str]:
    from exporter.errors import (
        DeployError,
        ExporterError,
        ModelLoadError,
        OutputError,
        ServingVersionError,
        TraceError,
        UsageError,
    )

    usage = (UsageError, OutputError, ModelLoadError, TraceError, DeployError, ServingVersionError)
    if isinstance(exc, usage):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, ExporterError):  # a check failed: audit, freeze proof, artifact, parity
        return EXIT_CHECK_FAILED, str(exc)
    if isinstance(exc, OSError):  # permissions, a file vanishing under us
        where = f" ({exc.filename})" if exc.filename else ""
        return EXIT_USAGE, f"{exc.strerror or exc}{where}: check the path, permissions, free space."
    raw = str(exc)
    # Keras wraps a layer's error in context and prints the original message in bold.
    marked = re.search(r"\x1b\[1m(.+?)\x1b\[0m", raw, re.DOTALL)
    lines = [line.strip() for line in (marked[1] if marked else raw).splitlines()]
    lines = [line for line in lines if line] or [""]
    # TF re-raises tracing errors as "in user code:" + a stack: the cause is the last line.
    summary = lines[-1] if lines[0].endswith(":") else lines[0]
    return EXIT_CHECK_FAILED, (
        f"unexpected {type(exc).__name__}: {summary[:300]} "
        "(rerun with --debug for the traceback, and report it)"
    )


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Parse, dispatch, and map every failure to an exit code and one `error:` line."""
    args = _parser(prog).parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    commands = {
        "export": _run_export,
        "audit": _run_audit,
        "inspect": _run_inspect,
        "parity": _run_parity,
        "deploy": _run_deploy,
    }
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        _stderr("error: interrupted; nothing was published by the unfinished command")
        return EXIT_INTERRUPTED
    except Exception as exc:  # every failure ends as one error line and an exit code
        if getattr(args, "debug", False):
            traceback.print_exception(exc)
        code, message = _exit_code_and_message(exc)
        headline, *details = message.splitlines() or [""]
        for line in details:  # e.g. the parity table: context first, the error line last
            _stderr(line)
        _stderr(f"error: {headline}")
        return code


def console() -> int:
    """The `frozen-scalars` console script: `python -m exporter` under the package's name."""
    return main(sys.argv[1:], prog="frozen-scalars")
