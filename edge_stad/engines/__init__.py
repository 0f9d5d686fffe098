"""Engines: folders of exported graphs plus a manifest, and the backends that run them.

Importable without torch (the runtime core); building engines needs the ``train`` extra.
"""
