"""The SavedModel format: the writer for TF Serving (frozen or with kept variables), its
variables checkpoint, warmup records, and what each TF Serving version can load.
"""
