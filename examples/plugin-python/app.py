"""jsonl-py (format 102): a statesnap format plugin in Python.

Every chunk is a complete gzip file of JSON lines, one entry per line as
``["key","value"]`` (the value is the stored JSON text, kept as a string so it
comes back byte for byte). An auditor can read any chunk file with standard
tools (``zcat chunk | jq``; the host's proof trailer after the gzip member is
ignored with a warning). Chunks hold about ``chunk_bytes`` of JSON lines
before compression and are cut at line boundaries, so each decodes alone.

Determinism: the gzip header's mtime is fixed at 0, the compression level is a
parameter recorded in the manifest, JSON is written with fixed separators and
no sorting of anything but what the host already ordered; no clock, randomness,
floats, threads or set/dict iteration order reaches the output.
"""

import gzip
import json
import struct

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import format as f

NAME = "jsonl-py"
VERSION = "1.0.0"
FORMAT = 102
DEFAULTS = {"chunk_bytes": "8000000", "level": "6"}
CHUNK_BYTES = (1024, 15_000_000)
# A chunk inflates to at most this much JSON: a bound on what one hostile
# chunk can make the reader hold (the host caps each call's output too).
MAX_INFLATED = 64 << 20

_U32 = struct.Struct("<I")
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _fail(kind, message):
    raise Err(kind(message))


def _params(params):
    """The parameters with defaults filled in, checked."""
    values = dict(DEFAULTS)
    for p in params:
        if p.name not in DEFAULTS:
            _fail(f.PluginError_InvalidParams, f"unknown parameter {p.name!r} (jsonl-py knows chunk_bytes, level)")
        values[p.name] = p.value
    try:
        chunk_bytes = int(values["chunk_bytes"], 10)
        level = int(values["level"], 10)
    except ValueError:
        _fail(f.PluginError_InvalidParams, "chunk_bytes and level must be whole numbers")
    if not CHUNK_BYTES[0] <= chunk_bytes <= CHUNK_BYTES[1]:
        _fail(f.PluginError_InvalidParams, "chunk_bytes must be from 1024 to 15000000")
    if not 1 <= level <= 9:
        _fail(f.PluginError_InvalidParams, "level must be from 1 to 9")
    return chunk_bytes, level


class Writer(f.Writer):
    def __init__(self, chunk_bytes, level):
        self.chunk_bytes = chunk_bytes
        self.level = level
        self.lines = []
        self.size = 0

    def _emit(self):
        text = "".join(self.lines).encode("utf-8")
        self.lines = []
        self.size = 0
        return gzip.compress(text, compresslevel=self.level, mtime=0)

    def write(self, batch):
        out = []
        pos, end = 0, len(batch)
        unpack = _U32.unpack_from
        try:
            while pos < end:
                (klen,) = unpack(batch, pos)
                key = batch[pos + 4 : pos + 4 + klen].decode("utf-8")
                pos += 4 + klen
                (vlen,) = unpack(batch, pos)
                value = batch[pos + 4 : pos + 4 + vlen].decode("utf-8")
                pos += 4 + vlen
                if pos > end:
                    raise ValueError
                line = _ENCODE([key, value]) + "\n"
                if self.lines and self.size + len(line) > self.chunk_bytes:
                    out.append(self._emit())
                self.lines.append(line)
                self.size += len(line)
        except (struct.error, ValueError):
            _fail(f.PluginError_InvalidInput, f"malformed batch at byte {pos}: an entry is truncated or not UTF-8")
        return out

    def finish(self):
        return [self._emit()] if self.lines else []


class Reader(f.Reader):
    def __init__(self):
        self.pending = []  # framed batches not yet returned

    def feed(self, chunk):
        if self.pending:
            _fail(f.PluginError_InvalidInput, "fed a chunk before the last one's entries were read")
        try:
            inflater = gzip.zlib.decompressobj(16 + 15)
            text = inflater.decompress(chunk, MAX_INFLATED)
            if inflater.unconsumed_tail:
                _fail(f.PluginError_InvalidInput, f"a chunk inflates to more than {MAX_INFLATED} bytes")
            if not inflater.eof:
                _fail(f.PluginError_InvalidInput, "a chunk's gzip stream is truncated")
            lines = text.decode("utf-8").split("\n")
        except (gzip.zlib.error, UnicodeDecodeError) as e:
            _fail(f.PluginError_InvalidInput, f"a chunk is not gzip-compressed UTF-8 text: {e}")
        if lines.pop() != "":
            _fail(f.PluginError_InvalidInput, "a chunk's last line is not terminated")
        if not lines:
            _fail(f.PluginError_InvalidInput, "a chunk holds no entries")
        pack = _U32.pack
        parts = []
        for n, line in enumerate(lines):
            try:
                key, value = json.loads(line)
                if type(key) is not str or type(value) is not str:
                    raise ValueError
            except ValueError:
                _fail(f.PluginError_InvalidInput, f"line {n + 1} of a chunk is not a [key, value] pair of strings")
            k = key.encode("utf-8")
            v = value.encode("utf-8")
            parts.append(pack(len(k)) + k + pack(len(v)) + v)
        self.pending = parts

    def next(self, max_bytes):
        if not self.pending:
            return None
        size, n = 0, 0
        for part in self.pending:
            if n and size + len(part) > max_bytes:
                break
            size += len(part)
            n += 1
        batch = b"".join(self.pending[:n])
        del self.pending[:n]
        return batch

    def finish(self):
        if self.pending:
            _fail(f.PluginError_InvalidInput, "finished with entries not read")


class Format(exports.Format):
    def describe(self):
        return f.Description(
            name=NAME,
            version=VERSION,
            format=FORMAT,
            params=[f.Param(name=k, value=v) for k, v in DEFAULTS.items()],
            summary="gzip-compressed JSON lines, one gzip file per chunk: readable with zcat and jq (Python)",
        )

    def new_writer(self, params):
        return Writer(*_params(params))

    def new_reader(self, params):
        _params(params)
        return Reader()
