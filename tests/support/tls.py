"""Test certificates: the stack's own (featurestream/stack/tls.py), which `up --kafka-security sasl_ssl` uses."""

from featurestream.stack.tls import TlsFiles, make_tls_files

__all__ = ["TlsFiles", "make_tls_files"]
