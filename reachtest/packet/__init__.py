"""Bytes in, bytes out: probe templates patched with struct, reply parsers, reply builders."""
