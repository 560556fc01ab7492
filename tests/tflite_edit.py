"""Test helpers: change a valid .tflite file through the schema's object API and pack it again (a valid flatbuffer
with bad contents), for the bad-input tests of the Python reader and the C loader."""
from __future__ import annotations

import json

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as S

from tsptq.tflite.writer import _AlignedBuffer


def repack(data: bytes, edit) -> bytes:
    """Unpack, let ``edit`` change the model, pack again with 16-byte aligned buffers (as the exporter writes them)."""
    m = S.ModelT.InitFromPackedBuf(data, 0)
    edit(m)
    for i, buf in enumerate(m.buffers):
        aligned = _AlignedBuffer()
        aligned.data = buf.data
        m.buffers[i] = aligned
    b = flatbuffers.Builder(1 << 20)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def edit_metadata(change):
    """An ``edit`` for ``repack`` that applies ``change`` to the 'tsptq' metadata (a dict)."""
    def edit(m):
        buf = m.buffers[m.metadata[0].buffer]
        meta = json.loads(bytes(buf.data))
        change(meta)
        buf.data = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    return edit
