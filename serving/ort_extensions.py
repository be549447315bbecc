"""onnxruntime-extensions: the custom-op library ORT needs for ONNX string ops.

tf2onnx writes the string ops ONNX lacks (regex replace, split, hashing) in the
`ai.onnx.contrib` domain, which onnxruntime-extensions implements. Both the exporter (checking
and parity) and the ONNX servable open such files, so the one way to load the library lives
here, on the serving side, which the exporter may import.
"""

from __future__ import annotations

import os
import sys

import onnxruntime as ort

CUSTOM_OPS_DOMAIN = "ai.onnx.contrib"  # tf2onnx.constants.CONTRIB_OPS_DOMAIN
CUSTOM_OPS_LIBRARY = "onnxruntime_extensions"


def session_options(library: str | None) -> ort.SessionOptions:
    """ORT session options, with onnxruntime-extensions' custom ops registered if asked for."""
    options = ort.SessionOptions()
    if library == CUSTOM_OPS_LIBRARY:
        options.register_custom_ops_library(extensions_library())
    return options


def extensions_library() -> str:
    """Path of onnxruntime-extensions' library, loaded so that it binds its own symbols.

    TensorFlow exports its RE2 build process-wide; a custom-op library loaded after it would
    call TF's RE2 for its regex ops and silently replace nothing. RTLD_DEEPBIND (scoped to
    this one import) makes the library prefer its own RE2, as it has in a process without TF.
    Raises ImportError when the package is not installed.
    """
    if CUSTOM_OPS_LIBRARY not in sys.modules and hasattr(os, "RTLD_DEEPBIND"):
        flags = sys.getdlopenflags()
        sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
        try:
            import onnxruntime_extensions
        finally:
            sys.setdlopenflags(flags)
    import onnxruntime_extensions

    return onnxruntime_extensions.get_library_path()
