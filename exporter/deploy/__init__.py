"""Deployment files for one export: Kubernetes objects and KServe InferenceServices, from
the export's report only (`python -m exporter deploy`).
"""
