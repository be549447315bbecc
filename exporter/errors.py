"""Typed errors of the exporter: each says what happened, what was expected and how to fix it."""

from __future__ import annotations


class ExporterError(Exception):
    """Base class: every failure the exporter reports on purpose."""


class ModelLoadError(ExporterError):
    """The model could not be loaded or built (bad path, bad factory, bad custom objects)."""


class AuditError(ExporterError):
    """The audit found an error-level problem with a scalar (untracked, non-finite)."""


class TraceError(ExporterError):
    """The model could not be traced into a `tf.function` with a usable signature."""


class FreezeError(ExporterError):
    """Variables could not be turned into constants, or the proof of it failed."""


class ExportError(ExporterError):
    """An artifact failed its check: conversion, onnx.checker, the ONNX Runtime load, the
    variables checkpoint read-back (exit 1). The subclasses below are the caller's to fix."""


class UsageError(ExportError):
    """A bad option, input or file given by the caller, found before anything is written."""


class OutputError(ExportError):
    """The output cannot be written: not a writable directory, disk full, quota exceeded."""


class ParityError(ExporterError):
    """Two runtimes disagree beyond the tolerance."""


class ParityUsageError(UsageError):
    """A parity check of an exported model could not start: missing export, version or input."""


class ServingVersionError(ExporterError):
    """A --serving-version the op table does not cover, or an unreadable SavedModel."""


class ServingCompatError(ExporterError):
    """The SavedModel uses an op, attr or GraphDef version the chosen TF Serving lacks."""


class CppLoaderError(ServingCompatError):
    """TensorFlow's C++ SavedModel loader (the one TF Serving links) refused or failed to run
    the SavedModel, or the wheel does not expose it."""


class OnnxReferenceError(ExporterError):
    """ONNX's reference evaluator cannot run the file (an op outside the standard, or one it
    lacks) or failed inside an op."""


class DeployError(ExporterError):
    """Manifests cannot be generated from these flags or this export (bad value, no report)."""
